"""A thin disk moved with the default strategy (``tar``) is checked from what flowed through the
copy, not read again, and a single byte flipped inside its data is still caught: on the target
after the swap (the moment the other damage tests use), by ``verify``; in the user's disk on the
source host after its fingerprint was taken, by ``transfer`` itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rehost.lab.lab import LabState
from tests.campaign_helpers import (
    add_to_site_config,
    journal_results,
    rehost,
    shell,
    two_host_lab,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

MIB = 1 << 20

#: 256 MiB with 8 MiB of data: the lab writes 1 MiB data blocks every 32 MiB, the rest holes
THIN_LAB = two_host_lab("thin", """
[[vms]]
name = "thin"
host = "c5-a"
disks = [{ size_mib = 256, format = "raw", data_mib = 8 }]
""")

#: a byte inside the data block at 160 MiB (block 5 of 8), past the lab's header line
FLIP_AT = 160 * MIB + 123_457

#: flips one byte of a disk in place (python3: what the lab hosts have; the path and the offset
#: are arguments, never code)
FLIP = ("import sys\n"
        "f = open(sys.argv[1], 'r+b'); f.seek(int(sys.argv[2])); b = f.read(1)\n"
        "f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 1])); f.close()\n")

FLIPPING_PLUGIN = '''
from rehost.hooks import hookimpl

FLIP = {flip!r}

@hookimpl
def rehost_stage_finish(stage, vm, ctx, result):
    # fault injection: one byte of the disk's data flipped, after {stage}, on the {where} host
    if vm is not None and vm.label == "thin" and stage == "{stage}":
        disk = vm.file_disks()[0].source
        host = vm.{where}_host
        path = disk if "{stage}" == "swap_disks" else disk + "_BACK"
        ctx.shell(host).run(["python3", "-c", FLIP, path, "{at}"])
'''


def flipping_site(st: LabState, tmp_path: Path, stage: str, where: str) -> None:
    plugin = tmp_path / "flip.py"
    plugin.write_text(FLIPPING_PLUGIN.format(flip=FLIP, stage=stage, where=where, at=FLIP_AT))
    add_to_site_config(st, f'[plugins]\nfiles = ["{plugin}"]')


def status_row(st: LabState) -> dict[str, str]:
    rows = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)["vms"]
    [row] = rows
    return dict(row)


READ = ("import sys\n"
        "f = open(sys.argv[1], 'rb'); f.seek(int(sys.argv[2])); print(f.read(1)[0])\n")


def byte_at(st: LabState, host: str, path: str, offset: int) -> int:
    return int(shell(st, host).run(["python3", "-c", READ, path, str(offset)]).stdout)


def test_a_byte_flipped_in_the_data_on_the_target_is_caught_by_verify(
        make_lab, tmp_path: Path) -> None:
    st = make_lab(THIN_LAB)
    assert '[storage]\nstrategy = "tar"' in st.site_config.read_text()  # the default
    flipping_site(st, tmp_path, "swap_disks", "target")
    thin = st.vm("thin")
    disk = thin["disks"][0]

    res = rehost("run", "-c", str(st.site_config), "--delete-backups")
    assert res.returncode == 1, res.stdout + res.stderr
    row = status_row(st)
    assert row["status"] == "failed" and row["stage"] == "verify", row
    assert "the user's disk had" in row["error"], row["error"]
    assert disk["path"] in row["error"]

    # the copy itself was checked as it arrived, not read again, and it was right then
    transfer = journal_results(st, thin["domain"], "transfer")
    [copied] = transfer["disks"]
    assert copied["checked"] == "as it arrived"
    assert copied["algorithm"] == "sparse-sha1"
    assert transfer["bytes"] < disk["size"] // 8, "the copy moved the holes"
    preserved = journal_results(st, thin["domain"], "preserve_disks")["disks"][0]
    assert copied["checksum"] == preserved["checksum"]

    # what is on the target is not the user's disk: one byte differs, inside the data
    target = shell(st, "c6-a")
    assert target.checksum(disk["path"], "sha1") != disk["sha1"]
    src = shell(st, "c5-a")
    original = byte_at(st, "c5-a", disk["path"] + "_BACK", FLIP_AT)
    assert original != 0, "the flipped byte must lie in the disk's data"
    assert byte_at(st, "c6-a", disk["path"], FLIP_AT) == original ^ 1
    # cleanup never ran, --delete-backups notwithstanding: the user's disk is intact there
    assert src.checksum(disk["path"] + "_BACK", "sha1") == disk["sha1"]


def test_a_disk_changed_after_its_fingerprint_is_refused_by_the_transfer(
        make_lab, tmp_path: Path) -> None:
    st = make_lab(THIN_LAB)
    flipping_site(st, tmp_path, "preserve_disks", "source")
    thin = st.vm("thin")
    disk = thin["disks"][0]

    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 1, res.stdout + res.stderr
    row = status_row(st)
    assert row["status"] == "failed" and row["stage"] == "transfer", row
    assert "the bytes that arrived have sparse-sha1" in row["error"], row["error"]
    assert "the user's disk had" in row["error"]
    # nothing went further: the target's disk was never swapped in
    assert journal_results(st, thin["domain"], "swap_disks") == {}
    target = shell(st, "c6-a")
    assert not target.exists(disk["path"]) or \
        target.checksum(disk["path"], "sha1") != disk["sha1"]
