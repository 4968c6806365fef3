"""``rehost lab reinstall HOST --os centos-6.4``: a lab host reinstalled, the way an operator
reinstalls an emptied CentOS 5 server as CentOS 6 between the waves of an evacuation.

The host stops (its VMs, libvirtd, sshd), loses what a reinstall loses — every domain
definition, libvirt's state and logs, and its own datastore's files (a shared datastore is
another machine's: it stays) — gets the new release, and starts again at the same address.
Kept, as a site restoring them would: its ssh host key and authorised keys (rehost keeps
checking host keys), and its hostname.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from loguru import logger

from rehost.core.errors import LabError
from rehost.lab import hosts as labhosts
from rehost.lab.description import PERSONALITIES

#: what a reinstall wipes, as the host's folders (BIND_DIRS names)
_WIPED = ("run", "var-lib-libvirt", "var-log-libvirt", "var-cache-libvirt")


def reinstall(host: str, os_name: str, root: Path | None = None) -> dict[str, str]:
    """Reinstall ``host`` with ``os_name`` (a lab personality); returns its new record."""
    from rehost.lab.lab import _save_state, lab_dir, load_state

    root = root or lab_dir()
    st = load_state(root)
    if st is None:
        raise LabError(f"no lab is up in {root}")
    if os_name not in PERSONALITIES:
        raise LabError(f"lab reinstall: {os_name!r} is not a lab personality; choose one of "
                       f"{', '.join(PERSONALITIES)}")
    try:
        record = st.host(host)
    except KeyError:
        raise LabError(f"lab reinstall: no host {host!r} in the lab (hosts: "
                       f"{', '.join(h['name'] for h in st.data['hosts'])})") from None
    lay = st.layout(host)
    t0 = time.monotonic()
    labhosts.stop_host(lay)
    for sub in _WIPED:
        path = lay.path(sub)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    for xml in (lay.path("etc") / "libvirt" / "qemu").glob("*.xml"):
        xml.unlink()  # the domain definitions
    shared = Path(record["datastore_dir"]).name == "shared-datastore"
    own = ([] if shared else [lay.datastore_dir]) + ([lay.local_dir] if lay.local_dir else [])
    for folder in own:  # its own datastores (a local one is never shared)
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    (lay.path("etc") / "redhat-release").write_text(PERSONALITIES[os_name] + "\n")
    (lay.path("run") / "sshd").mkdir(exist_ok=True)
    lay.path("run").chmod(0o755)
    (lay.path("run") / "sshd").chmod(0o755)
    # libvirtd probes QEMU again (4-8 s) unless it finds a cache: another host's will do
    seed = next((Path(h["root"]) / "var-cache-libvirt" for h in st.data["hosts"]
                 if h["name"] != host), None)
    if seed is not None and seed.is_dir():
        shutil.rmtree(lay.path("var-cache-libvirt"))
        shutil.copytree(seed, lay.path("var-cache-libvirt"), symlinks=True)
    labhosts.start_host(lay)
    labhosts.wait_ready(lay)
    record = dict(record, os=os_name, release=PERSONALITIES[os_name])
    data = dict(st.data)
    data["hosts"] = [record if h["name"] == host else h for h in data["hosts"]]
    data["vms"] = [v for v in data["vms"] if v["host"] != host]
    _save_state(root, data)
    logger.info("lab: {} reinstalled as {} in {:.1f} s", host, PERSONALITIES[os_name],
                time.monotonic() - t0)
    return record


def reboot(host: str, root: Path | None = None) -> None:
    """Reboot a lab host: its VMs stop (none restarts by itself), its daemons start again;
    its disks, domain definitions and release stay."""
    from rehost.lab.lab import lab_dir, load_state

    root = root or lab_dir()
    st = load_state(root)
    if st is None:
        raise LabError(f"no lab is up in {root}")
    lay = st.layout(host)
    t0 = time.monotonic()
    labhosts.stop_host(lay)
    shutil.rmtree(lay.path("run"), ignore_errors=True)  # /run is a tmpfs: empty after a boot
    (lay.path("run") / "sshd").mkdir(parents=True)
    lay.path("run").chmod(0o755)
    (lay.path("run") / "sshd").chmod(0o755)
    labhosts.start_host(lay)
    labhosts.wait_ready(lay)
    logger.info("lab: {} rebooted in {:.1f} s", host, time.monotonic() - t0)
