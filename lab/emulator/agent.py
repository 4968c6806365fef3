"""What Abiquo's agents do on a hypervisor host, done here through the lab's local libvirt
sockets and the controller's view of each host's datastore.

Each call opens its own libvirt connection (a local socket: a few milliseconds), so the task
worker and the monitor never share one.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libvirt
from loguru import logger

from rehost.lab.lab import LabState, domain_xml

MIB = 1024 * 1024
TEMPLATE_HEADER = "abiquo template"

# libvirt's domain states, as Abiquo names them
_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: "ON",
    libvirt.VIR_DOMAIN_BLOCKED: "ON",
    libvirt.VIR_DOMAIN_PAUSED: "PAUSED",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "PAUSED",
}


class AgentError(Exception):
    """A host refused an action; the message names the host."""


@contextmanager
def _connect(lab: LabState, host: str) -> Iterator[Any]:
    try:
        conn = libvirt.open(lab.socket_uri(host))
    except libvirt.libvirtError as exc:
        raise AgentError(f"{host}: cannot reach libvirtd: {exc}") from exc
    try:
        yield conn
    finally:
        conn.close()


def _lookup(conn: Any, name: str) -> Any | None:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def reachable(lab: LabState, host: str) -> bool:
    try:
        with _connect(lab, host):
            return True
    except AgentError:
        return False


def domain_state(lab: LabState, host: str, name: str) -> str | None:
    """``ON``, ``OFF`` or ``PAUSED``; None when the domain is not defined on the host."""
    with _connect(lab, host) as conn:
        dom = _lookup(conn, name)
        if dom is None:
            return None
        state = dom.state()[0]
        return _STATES.get(state, "OFF")


def domains(lab: LabState, host: str) -> dict[str, str]:
    """Every domain on the host with its state."""
    with _connect(lab, host) as conn:
        return {d.name(): _STATES.get(d.state()[0], "OFF") for d in conn.listAllDomains()}


def write_template_disk(lab: LabState, host: str, disk: dict[str, Any], vm_uuid: str,
                        index: int) -> None:
    """Write a fresh template disk at the disk's path on the host's datastore, overwriting
    whatever is there in place (as ``cp`` would): this is what destroys a user's disk that
    was not preserved before a redeploy."""
    target = lab.layout(host).datastore_in_controller(disk["path"])
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (f"{TEMPLATE_HEADER} vm={vm_uuid} disk={index} "
              f"(a fresh copy written by the Abiquo emulator's deploy)\n").encode()
    size = int(disk["size"])
    if disk.get("format", "raw") == "raw":
        with open(target, "wb") as f:
            f.truncate(size)
            f.write(header)
        return
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".abiquo-template-") as tmp:
        raw = Path(tmp) / "raw"
        with open(raw, "wb") as f:
            f.truncate(size)
            f.write(header)
        image = Path(tmp) / "image"
        proc = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", str(disk["format"]),
                               str(raw), str(image)], capture_output=True, text=True,
                              timeout=300, check=False)
        if proc.returncode != 0:
            raise AgentError(f"{host}: qemu-img convert failed: {proc.stderr.strip()}")
        with open(image, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(4 * MIB):
                dst.write(chunk)


def delete_disk(lab: LabState, host: str, disk: dict[str, Any]) -> None:
    target = lab.layout(host).datastore_in_controller(disk["path"])
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass


def deploy(lab: LabState, host: str, name: str, uuid: str, ram_mib: int, cpu: int,
           disks: list[dict[str, Any]], volume: str | None) -> None:
    """Template disks, define, start: a deploy on one host."""
    for i, d in enumerate(disks):
        write_template_disk(lab, host, d, uuid, i)
    xml = domain_xml(name, uuid, ram_mib, cpu, disks, volume)
    with _connect(lab, host) as conn:
        try:
            old = _lookup(conn, name)
            if old is not None:
                if old.isActive():
                    old.destroy()
                old.undefine()
            dom = conn.defineXML(xml)
            dom.create()
        except libvirt.libvirtError as exc:
            raise AgentError(f"{host}: {name}: {exc}") from exc
    logger.info("emulator: deployed {} on {}", name, host)


def undeploy(lab: LabState, host: str, name: str, disks: list[dict[str, Any]]) -> None:
    """Destroy and undefine the domain, delete its disk files. A block volume is only
    detached (it goes with the domain definition); its data is never touched."""
    with _connect(lab, host) as conn:
        try:
            dom = _lookup(conn, name)
            if dom is not None:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        except libvirt.libvirtError as exc:
            raise AgentError(f"{host}: {name}: {exc}") from exc
    for d in disks:
        delete_disk(lab, host, d)
    logger.info("emulator: undeployed {} from {}", name, host)


def set_power(lab: LabState, host: str, name: str, state: str) -> None:
    """``ON`` starts (or resumes), ``OFF`` pulls the plug, ``PAUSED`` suspends."""
    with _connect(lab, host) as conn:
        try:
            dom = _lookup(conn, name)
            if dom is None:
                raise AgentError(f"{host}: {name} is not defined")
            current = _STATES.get(dom.state()[0], "OFF")
            if state == "ON":
                if current == "PAUSED":
                    dom.resume()
                elif current == "OFF":
                    dom.create()
            elif state == "OFF" and current != "OFF":
                dom.destroy()
            elif state == "PAUSED" and current == "ON":
                dom.suspend()
        except libvirt.libvirtError as exc:
            raise AgentError(f"{host}: {name}: {exc}") from exc
