"""Pre-copy under the Abiquo control plane (the emulator), with a bandwidth cap: the staged host
is the one rehost predicts from Abiquo's allocation (the only target here), the VM's disk
changes after the pre-copy, and Abiquo deploys it where it was staged. What the operator sees:
the VM ON in Abiquo on the target machine and running there in libvirt, on the source's final
bytes; the window sent the changed blocks only; the copies kept to the cap; nothing staged is
left on the target.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.campaign_helpers import (
    abiquo,
    add_to_site_config,
    journal_results,
    rehost,
    shell,
    two_host_lab,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PLUGIN = Path(__file__).parent / "data" / "faults" / "precopy_plugin.py"
SIZE = 64 << 20
DATA = 16 << 20
CAP_MIB = 8

LAB = two_host_lab("precopy-abq", """
[[vms]]
name = "pc"
host = "c5-a"
disks = [{ size_mib = 64, format = "raw", data_mib = 16 }]
""")


def test_precopy_under_abiquo_sends_only_the_delta_within_the_cap(make_lab) -> None:
    st = make_lab(LAB)
    add_to_site_config(st, f'[storage.options]\nprecopy = true\nbwlimit_mib = {CAP_MIB}\n\n'
                           f'[plugins]\nfiles = ["{PLUGIN}"]')
    res = rehost("run", "-c", str(st.site_config),
                 env={"REHOST_TEST_PRECOPY": json.dumps({"pc": "write"})})
    assert res.returncode == 0, res.stdout + res.stderr
    vm = st.vm("pc")
    disk = vm["disks"][0]
    src, tgt = shell(st, "c5-a"), shell(st, "c6-a")

    # Abiquo and libvirt both have it ON/running on the target, on the source's final bytes
    with abiquo(st) as c:
        avm = c.find_vm(uuid=vm["uuid"])
        assert avm.state == "ON"
        assert c.vm_machine(avm).name == "c6-a"  # type: ignore[union-attr]
    state = tgt.run(["virsh", "-c", "qemu:///system", "domstate", vm["domain"]]).stdout
    assert state.strip() == "running"
    final = src.checksum(disk["path"] + "_BACK", "sha1")
    assert final != disk["sha1"], "the guest's write after the pre-copy reached its disk"
    assert tgt.checksum(disk["path"], "sha1") == final

    pre = journal_results(st, vm["domain"], "precopy")
    [staged] = pre["staged"]
    [copied] = journal_results(st, vm["domain"], "transfer")["disks"]
    assert pre["host"] == "c6-a"
    assert copied["precopied"] is True
    assert copied["delta_bytes"] == 2 * 65536  # the two blocks the guest wrote
    assert DATA <= staged["bytes"] < SIZE
    # the cap: the pre-copy cannot have moved its bytes faster than CAP_MIB MiB/s (the first
    # MiB goes before the pace is kept)
    assert staged["seconds"] >= (staged["bytes"] - (1 << 20)) / (CAP_MIB << 20)
    # nothing staged is left, nor its block sums
    assert not tgt.exists(staged["staging"])
    assert not tgt.exists(staged["staging"] + ".sums")
    assert not tgt.exists(staged["staging"] + ".sums.part")
