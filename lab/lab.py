"""The rehearsal lab: ``up`` builds hosts and VMs from a description and writes a site config;
``down`` removes everything it made; ``status`` tells what is up.

Besides the hosts, ``up`` starts the Abiquo API emulator (Abiquo labs) and an SMTP server that
keeps every message it receives (:mod:`rehost.lab.mailserver`; ``[lab] mail = false`` leaves
it out); the site config points the mail notifier at it.

The lab's record (``lab.json`` in the lab directory) is the source of truth for ``down`` and for
tests: hosts, addresses, VMs with the checksums of their disks as created, the shared volume.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
from loguru import logger

from rehost.core.errors import LabError
from rehost.lab import hosts as labhosts
from rehost.lab.description import PERSONALITIES, LabDescription, LabVM, load_description
from rehost.lab.hosts import HostLayout

DEFAULT_LAB_DIR = "/var/lib/rehost-lab"
MIB = 1024 * 1024


def lab_dir() -> Path:
    """The lab's folder: REHOST_LAB_DIR, else one per lab instance."""
    if os.environ.get("REHOST_LAB_DIR"):
        return Path(os.environ["REHOST_LAB_DIR"])
    inst = labhosts.instance()
    return Path(DEFAULT_LAB_DIR + ("" if inst == "0" else f"-{inst}"))


@dataclass
class LabState:
    """What ``lab.json`` holds, with helpers for tests and the emulator."""

    data: dict[str, Any]

    @property
    def root(self) -> Path:
        return Path(self.data["root"])

    @property
    def site_config(self) -> Path:
        return Path(self.data["site_config"])

    def host(self, name: str) -> dict[str, Any]:
        for h in self.data["hosts"]:
            if h["name"] == name:
                return dict(h)
        raise KeyError(name)

    def layout(self, name: str) -> HostLayout:
        h = self.host(name)
        local = h.get("local_datastore_dir")
        return HostLayout(h["name"], h["index"], h["address"], Path(h["root"]),
                          Path(h["datastore_dir"]), h["datastore"],
                          h.get("local_datastore") or "", Path(local) if local else None)

    def vm(self, name: str) -> dict[str, Any]:
        for v in self.data["vms"]:
            if name in (v["name"], v["uuid"], v["domain"]):
                return dict(v)
        raise KeyError(name)

    def socket_uri(self, host: str) -> str:
        """A local URI to the host's libvirtd (for the lab's own set-up and checks)."""
        return f"qemu+unix:///system?socket={self.layout(host).libvirt_socket}"

    def ssh_uri(self, host: str) -> str:
        return str(self.host(host)["uri"])


def load_state(root: Path | None = None) -> LabState | None:
    path = (root or lab_dir()) / "lab.json"
    if not path.exists():
        return None
    return LabState(json.loads(path.read_text()))


def _save_state(root: Path, data: dict[str, Any]) -> None:
    tmp = root / "lab.json.tmp"
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, root / "lab.json")


# -- disks and domains -------------------------------------------------------------------------


def disk_content_blocks(vm: LabVM, index: int, size_mib: int, data_mib: int) -> list[int]:
    """Which MiB blocks of a disk hold data: spread over the disk, the rest are holes."""
    if data_mib >= size_mib:
        return list(range(size_mib))
    step = max(1, size_mib // max(1, data_mib))
    return [min(size_mib - 1, i * step) for i in range(data_mib)]


def write_raw_disk(path: Path, vm: LabVM, index: int, size_mib: int, data_mib: int) -> None:
    rng = random.Random(f"{vm.uuid}:{index}")
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)
        for block in disk_content_blocks(vm, index, size_mib, data_mib):
            data = bytearray(rng.randbytes(MIB))
            header = f"rehost-lab disk vm={vm.name} uuid={vm.uuid} disk={index} block={block}\n"
            data[: len(header)] = header.encode()
            f.seek(block * MIB)
            f.write(data)


def sha1_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def disk_path(datastore: str, vm: LabVM, index: int) -> str:
    return f"{datastore}/{vm.domain}-disk{index}"


def make_vm_disks(layout: HostLayout, vm: LabVM) -> list[dict[str, Any]]:
    out = []
    for i, d in enumerate(vm.disks):
        datastore = layout.local_datastore if d.datastore == "local" else layout.datastore
        if not datastore:
            raise LabError(f"lab: VM {vm.name} wants the local datastore, which "
                           f"{layout.name} lacks")
        inside = disk_path(datastore, vm, i)
        target = layout.datastore_in_controller(inside)
        if d.format == "raw":
            write_raw_disk(target, vm, i, d.size_mib, d.data_mib)
        else:
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                raw = Path(tmp) / "raw"
                write_raw_disk(raw, vm, i, d.size_mib, d.data_mib)
                labhosts.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                              str(target)], timeout=300)
        out.append({"path": inside, "format": d.format, "size": d.size_mib * MIB,
                    "datastore": d.datastore or "main",
                    "target": f"vd{chr(ord('a') + i)}", "sha1": sha1_file(target)})
    return out


#: where a lab host of an old personality keeps its QEMU, as CentOS 5 does (a link to the real
#: one, in the host's own /var/lib/libvirt: the other hosts have no such file)
OLD_EMULATOR = "/var/lib/libvirt/bin/qemu-kvm"


def domain_xml(name: str, uuid: str, ram_mib: int, cpu: int, disks: list[dict[str, Any]],
               volume: str | None, *, emulator: str = "/usr/bin/qemu-system-x86_64",
               machine: str = "pc") -> str:
    from xml.sax.saxutils import escape, quoteattr

    parts = []
    for d in disks:
        parts.append(
            "    <disk type='file' device='disk'>\n"
            f"      <driver name='qemu' type={quoteattr(d['format'])} cache='none'/>\n"
            f"      <source file={quoteattr(d['path'])}/>\n"
            f"      <target dev={quoteattr(d['target'])} bus='virtio'/>\n"
            "    </disk>\n"
        )
    if volume:
        dev = f"vd{chr(ord('a') + len(disks))}"
        parts.append(
            "    <disk type='block' device='disk'>\n"
            "      <driver name='qemu' type='raw' cache='none'/>\n"
            f"      <source dev={quoteattr(volume)}/>\n"
            f"      <target dev='{dev}' bus='virtio'/>\n"
            "      <shareable/>\n"
            "    </disk>\n"
        )
    return (
        "<domain type='qemu'>\n"
        f"  <name>{escape(name)}</name>\n"
        f"  <uuid>{uuid}</uuid>\n"
        f"  <memory unit='MiB'>{ram_mib}</memory>\n"
        f"  <vcpu>{cpu}</vcpu>\n"
        f"  <os><type arch='x86_64' machine={quoteattr(machine)}>hvm</type><boot dev='hd'/>"
        "</os>\n"
        "  <features><acpi/></features>\n"
        "  <on_poweroff>destroy</on_poweroff>\n"
        "  <devices>\n"
        f"    <emulator>{escape(emulator)}</emulator>\n"
        + "".join(parts)
        + "    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>\n"
        "  </devices>\n"
        "</domain>\n"
    )


def _open(uri: str) -> Any:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise LabError(f"lab: cannot connect to {uri}: {exc}") from exc


# -- up / down / status ------------------------------------------------------------------------


def _controller_ssh(root: Path, known_hosts: str, network_prefix: str) -> tuple[Path, Path]:
    key = root / "id_ed25519"
    (root / "known_hosts").write_text(known_hosts)
    cfg = root / "ssh_config"
    cfg.write_text(
        f"Host {network_prefix}\n"
        "  User root\n"
        f"  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {root / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"
        "  ConnectTimeout 10\n"
        "  LogLevel ERROR\n"
    )
    # libvirt's ssh transport takes no ssh_config: give it an ssh that reads ours
    wrapper = root / "bin" / "ssh"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nexec ssh -F "{cfg}" "$@"\n')
    wrapper.chmod(0o755)
    return cfg, wrapper


def up(description_path: str | Path | None = None, root: Path | None = None) -> LabState:
    """Bring the lab up (clearing an earlier one first) and write its site config."""
    desc = load_description(description_path)
    root = root or lab_dir()
    labhosts.check_prerequisites()
    down(root, quiet=True)
    t0 = time.monotonic()
    labhosts.ensure_qemu_user()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    state: dict[str, Any] = {"name": desc.name, "root": str(root), "description": desc.source,
                             "created_dirs": [], "hosts": [], "vms": [], "volume": None,
                             "started": time.time()}
    _save_state(root, state)  # from here on, `down` knows what to remove

    # mount points the hosts need; made here only if missing, removed by `down`
    local = desc.local_datastore if desc.uses_local_datastore else ""
    for inside in [p for p, _ in labhosts.BIND_DIRS] + [desc.datastore] + ([local] if local
                                                                          else []):
        if not os.path.isdir(inside):
            os.makedirs(inside)
            state["created_dirs"].append(inside)
    _save_state(root, state)

    controller, addresses, prefix = labhosts.host_addresses(desc.network, len(desc.hosts))
    labhosts.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rehost-lab", "-f",
                  str(root / "id_ed25519")])
    shared_dir = root / "shared-datastore"
    layouts = []
    for i, h in enumerate(desc.hosts):
        hroot = root / "hosts" / h.name
        ds_dir = shared_dir if desc.shared_datastore else hroot / "datastore"
        layouts.append(HostLayout(h.name, i, addresses[i], hroot, ds_dir, desc.datastore,
                                  local, hroot / "local-datastore" if local else None))

    for h, lay in zip(desc.hosts, layouts, strict=True):
        labhosts.prepare_host_files(lay, PERSONALITIES[h.os], root / "id_ed25519", "")
    known = "".join(f"{lay.address} ssh-ed25519 {labhosts.host_public_key(lay)}\n"
                    for lay in layouts)
    for lay in layouts:
        (lay.path("root-ssh") / "known_hosts").write_text(known)
    net_glob = ".".join(controller.split(".")[:3]) + ".*"
    ssh_config, wrapper = _controller_ssh(root, known, net_glob)

    labhosts.create_network(layouts, controller, prefix)
    state["controller"] = controller
    for h, lay in zip(desc.hosts, layouts, strict=True):
        state["hosts"].append({
            "name": h.name, "index": lay.index, "os": h.os, "release": PERSONALITIES[h.os],
            "address": lay.address, "root": str(lay.root), "datastore": lay.datastore,
            "datastore_dir": str(lay.datastore_dir), "netns": lay.netns, "cpus": h.cpus,
            "local_datastore": lay.local_datastore,
            "local_datastore_dir": str(lay.local_dir) if lay.local_dir else None,
            "ram_mib": h.ram_mib, "rack": h.rack,
            "uri": f"qemu+ssh://root@{lay.address}/system?command={wrapper}",
        })
    _save_state(root, state)

    # the first host probes QEMU's capabilities (4-8 s); the others reuse its cache. Asking
    # its version is what makes libvirtd probe (opening a connection does not): a site's
    # libvirtd, running for months, has long done it, so rehost's first preflight must not
    # pay it here either
    labhosts.start_host(layouts[0])
    labhosts.wait_ready(layouts[0])
    first = _open(f"qemu+unix:///system?socket={layouts[0].libvirt_socket}")
    try:
        first.getVersion()
    finally:
        first.close()
    seed = layouts[0].path("var-cache-libvirt")
    for lay in layouts[1:]:
        shutil.rmtree(lay.path("var-cache-libvirt"))
        shutil.copytree(seed, lay.path("var-cache-libvirt"), symlinks=True)
        labhosts.start_host(lay)
    for lay in layouts[1:]:
        labhosts.wait_ready(lay)
    logger.info("lab: {} hosts up in {:.1f} s", len(layouts), time.monotonic() - t0)

    volume_dev = _make_volume(root, desc, state) if any(v.volume for v in desc.vms) else None
    by_name = {lay.name: lay for lay in layouts}
    old_style = {h.name: _old_host(by_name[h.name]) for h in desc.hosts
                 if desc.control == "libvirt" and h.os.startswith("centos-5")}
    for vm in desc.vms:
        lay = by_name[vm.host]
        disks = make_vm_disks(lay, vm)
        xml = domain_xml(vm.domain, vm.uuid, vm.ram_mib, vm.cpu, disks,
                         volume_dev if vm.volume else None, **old_style.get(vm.host, {}))
        conn = _open(f"qemu+unix:///system?socket={lay.libvirt_socket}")
        try:
            dom = conn.defineXML(xml)
            if vm.running:
                dom.create()
        except libvirt.libvirtError as exc:
            raise LabError(f"lab: VM {vm.name} on {vm.host}: {exc}") from exc
        finally:
            conn.close()
        state["vms"].append({"name": vm.name, "uuid": vm.uuid, "domain": vm.domain,
                             "host": vm.host, "cpu": vm.cpu, "ram_mib": vm.ram_mib,
                             "disks": disks, "volume": volume_dev if vm.volume else None,
                             "running": vm.running, "captured": vm.captured,
                             "configured": vm.configured, "enterprise": vm.enterprise,
                             "owner": vm.owner})
        _save_state(root, state)

    state["ssh_config"] = str(ssh_config)
    state["site_config"] = str(root / "site.toml")
    state["control"] = desc.control
    if desc.control == "abiquo":
        state["abiquo"] = desc.abiquo  # the emulator's version profile
    # the emulator's tenants: None, its own default (one enterprise, one user)
    state["enterprises"] = [e.to_dict() for e in desc.enterprises] or None
    _save_state(root, state)
    if desc.control == "abiquo":
        from rehost.lab.emulator.process import start_emulator

        state["emulator"] = start_emulator(state)
        _save_state(root, state)
    if desc.mail:
        from rehost.lab.mailserver import start_mailserver

        state["mail"] = start_mailserver(state)
        _save_state(root, state)
    from rehost.lab.siteconfig import write_site_config

    write_site_config(LabState(state))
    state["up_seconds"] = round(time.monotonic() - t0, 1)
    _save_state(root, state)
    return LabState(state)


def _old_host(lay: HostLayout) -> dict[str, str]:
    """On plain libvirt, a CentOS 5 host of the lab defines its VMs as an old host would: its
    QEMU at its own path (which the new hosts lack) and an older machine type than the
    current one, so that moving a VM means adapting its XML."""
    bindir = lay.path("var-lib-libvirt") / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    link = bindir / "qemu-kvm"
    if not link.is_symlink():
        link.symlink_to("/usr/bin/qemu-system-x86_64")
    conn = _open(f"qemu+unix:///system?socket={lay.libvirt_socket}")
    try:
        caps = conn.getCapabilities()
    finally:
        conn.close()
    versions = sorted({m for m in re.findall(r">(pc-i440fx-\d+\.\d+)<", caps)},
                      key=lambda m: tuple(int(x) for x in m.rsplit("-", 1)[1].split(".")))
    if len(versions) < 2:
        raise LabError(f"lab: {lay.name}'s QEMU offers no older i440fx machine type "
                       f"({', '.join(versions) or 'none'})")
    return {"emulator": OLD_EMULATOR, "machine": versions[-2]}


def _make_volume(root: Path, desc: LabDescription, state: dict[str, Any]) -> str:
    """An iSCSI-like shared volume: a loop device every host sees."""
    vol = root / "volumes" / "lun0.img"
    vol.parent.mkdir(exist_ok=True)
    rng = random.Random(f"{desc.name}:lun0")
    with open(vol, "wb") as f:
        f.truncate(desc.volume_mib * MIB)
        f.write(b"rehost-lab shared volume lun0\n" + rng.randbytes(MIB))
    dev = labhosts.run(["losetup", "-f", "--show", str(vol)]).stdout.strip()
    state["volume"] = {"file": str(vol), "device": dev, "sha1": sha1_file(vol),
                       "size": desc.volume_mib * MIB}
    _save_state(root, state)
    return dev


def down(root: Path | None = None, quiet: bool = False) -> list[str]:
    """Remove everything the lab made: processes (by pid), loop devices, namespaces, files."""
    root = root or lab_dir()
    done: list[str] = []
    st = load_state(root)
    if st is not None:
        emulator = st.data.get("emulator") or {}
        if emulator.get("pid"):
            labhosts.stop_pids([int(emulator["pid"])])
            done.append(f"stopped the Abiquo emulator (pid {emulator['pid']})")
        mail = st.data.get("mail") or {}
        if mail.get("pid"):
            labhosts.stop_pids([int(mail["pid"])])
            done.append(f"stopped the SMTP server (pid {mail['pid']})")
        for h in st.data.get("hosts", []):
            labhosts.stop_host(st.layout(h["name"]))
            done.append(f"stopped host {h['name']}")
    # leftovers of a lab whose record is gone: its namespaces still hold only its processes
    for ns in labhosts.lab_namespaces():
        labhosts.stop_pids(labhosts.netns_pids(ns))
    if st is not None and st.data.get("volume"):
        vol = st.data["volume"]
        out = labhosts.run(["losetup", "-j", vol["file"]], check=False).stdout
        for line in out.splitlines():
            labhosts.run(["losetup", "-d", line.split(":", 1)[0]], check=False)
        done.append(f"detached {vol['device']}")
    namespaces = labhosts.lab_namespaces()
    labhosts.delete_network()
    if namespaces:
        done.append(f"deleted namespaces {' '.join(namespaces)}")
    # a folder that is a mount point of another lab's host must stay (rmdir would detach it)
    if st is not None and not labhosts.any_lab_namespaces():
        for d in reversed(st.data.get("created_dirs", [])):
            try:
                os.rmdir(d)
            except OSError:
                pass
    if root.exists():
        shutil.rmtree(root)
        done.append(f"removed {root}")
    if not quiet:
        for line in done:
            logger.info("lab: {}", line)
    return done


def status(root: Path | None = None) -> dict[str, Any]:
    st = load_state(root or lab_dir())
    if st is None:
        return {"up": False, "namespaces": labhosts.lab_namespaces()}
    hosts = []
    for h in st.data.get("hosts", []):
        lay = st.layout(h["name"])
        pids = {f.name: labhosts.read_pid(f) for f in lay.pid_files()[-3:]}
        alive = {k: bool(p and labhosts._pid_alive(p)) for k, p in pids.items()}
        domains: list[dict[str, str]] = []
        if alive.get("libvirtd.pid"):
            try:
                conn = libvirt.open(st.socket_uri(h["name"]))
                for dom in conn.listAllDomains():
                    running = dom.isActive() == 1
                    domains.append({"name": dom.name(), "state": "running" if running else "off"})
                conn.close()
            except libvirt.libvirtError as exc:
                domains.append({"name": "?", "state": f"error: {exc}"})
        hosts.append({"name": h["name"], "release": h["release"], "address": h["address"],
                      "daemons": alive, "domains": domains})
    return {"up": True, "root": str(st.root), "site_config": st.data.get("site_config"),
            "hosts": hosts, "volume": st.data.get("volume"),
            "emulator": st.data.get("emulator"), "mail": st.data.get("mail"),
            "namespaces": labhosts.lab_namespaces()}


def lab_mounts(root: Path | None = None) -> list[str]:
    """Mounts of the lab visible from here (there should be none outside its namespaces)."""
    r = str(root or lab_dir())
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if r in line or "/run/netns/" + labhosts.netns_prefix() in line]


def host_shell_argv(st: LabState, host: str) -> list[str]:
    """An ssh command that reaches a lab host (for people poking around)."""
    return ["ssh", "-F", str(st.data["ssh_config"]), f"root@{st.host(host)['address']}"]


def run_on_host(st: LabState, host: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    from rehost.core.remote import quote_argv

    return labhosts.run([*host_shell_argv(st, host), "--", quote_argv(argv)], check=False)
