"""One libvirt connection to one hypervisor host, and the few things rehost asks of it.

Every libvirt failure comes out as :class:`~rehost.core.errors.HypervisorError` naming the host
(its URI) and the domain; a missing domain is the subclass :class:`DomainNotFound`. The calls
used are the ones a CentOS 5 host's libvirt (0.8.x) answers too; where a newer call is used
(``undefineFlags``) the old one is the fallback.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import libvirt
from loguru import logger

from rehost.core.disks import parse_disks
from rehost.core.errors import HypervisorError, PreconditionError
from rehost.core.model import Disk, HostFacts
from rehost.core.remote import Shell

PowerOffResult = Literal["graceful", "forced", "already off"]

#: Domain states as virsh names them (``virsh domstate``).
STATE_NAMES: dict[int, str] = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "idle",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "in shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

#: libvirt error codes meaning "this daemon is too old for that call or flag".
_UNSUPPORTED = (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG)

_RELEASE = re.compile(r"\bCentOS(?: Linux)? release (\d+)((?:\.\d+)*)")


class DomainNotFound(HypervisorError):
    """The host has no domain of that name."""


@dataclass(frozen=True)
class DomainInfo:
    """A domain as ``virsh list --all`` shows it."""

    name: str
    uuid: str
    state: str
    active: bool
    persistent: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_centos_release(text: str) -> tuple[int | None, str | None]:
    """``"CentOS release 5.11 (Final)"`` -> ``(5, "5.11")``; not CentOS -> ``(None, None)``."""
    found = _RELEASE.search(text)
    if not found:
        return None, None
    return int(found.group(1)), found.group(1) + found.group(2)


def version_string(number: int) -> str:
    """libvirt's version numbers: 9000000 -> ``"9.0.0"``, 1005003 -> ``"1.5.3"``."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def shown_uri(uri: str) -> str:
    """The URI without a password, fit for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = (f"{parts.username}@" if parts.username else "") + (parts.hostname or "")
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


_quiet_lock = threading.Lock()
_quiet = False


def _silence_libvirt_stderr() -> None:
    """libvirt prints every error to stderr by default; ours are raised and logged instead."""
    global _quiet
    with _quiet_lock:
        if not _quiet:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _quiet = True


class Hypervisor:
    """A libvirt connection to one host, opened on first use and closed by :meth:`close`
    (or at the end of a ``with`` block). Not shared between threads: make one per thread.

    ``uri`` is any libvirt URI (``qemu+ssh://root@host/system``, ``qemu:///system``,
    ``qemu+unix:///system?socket=...``, ``test:///default``); ``name`` is how messages call the
    host (default: the URI's host name).
    """

    def __init__(self, uri: str, *, name: str | None = None) -> None:
        self.uri = uri
        self.name = name or urlsplit(uri).hostname or "localhost"
        self._conn: Any = None

    # -- connection ---------------------------------------------------------------------------

    def __enter__(self) -> Hypervisor:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Hypervisor({shown_uri(self.uri)!r}, name={self.name!r})"

    @property
    def where(self) -> str:
        uri = shown_uri(self.uri)
        return f"libvirt on {self.name} ({uri})" if self.name not in uri else f"libvirt at {uri}"

    def connect(self) -> Any:
        """The open ``virConnect`` (opened now if needed)."""
        if self._conn is None:
            _silence_libvirt_stderr()
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise HypervisorError(
                    f"{self.where}: cannot connect: {exc.get_error_message() or exc}"
                ) from exc
            if self._conn is None:  # very old bindings return None instead of raising
                raise HypervisorError(f"{self.where}: cannot connect")
            logger.debug("connected to {}", self.where)
        return self._conn

    @property
    def conn(self) -> Any:
        return self.connect()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError as exc:  # the host may be gone already: nothing to undo
                logger.debug("closing {}: {}", self.where, exc)

    @contextmanager
    def _libvirt(self, action: str, domain: str | None = None) -> Iterator[None]:
        """Turn a libvirt error into a HypervisorError naming the host, the action and the
        domain."""
        try:
            yield
        except libvirt.libvirtError as exc:
            raise self._error(action, domain, exc) from exc

    def _error(self, action: str, domain: str | None, exc: Any) -> HypervisorError:
        about = f" domain {domain!r}" if domain else ""
        detail = exc.get_error_message() or str(exc)
        cls = DomainNotFound if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN else (
            HypervisorError)
        return cls(f"{self.where}: cannot {action}{about}: {detail}")

    def _domain(self, name: str) -> Any:
        with self._libvirt("find", name):
            return self.conn.lookupByName(name)

    # -- domains ------------------------------------------------------------------------------

    def domains(self) -> list[DomainInfo]:
        """Every domain of the host, running or defined, sorted by name."""
        with self._libvirt("list domains"):
            try:
                found = list(self.conn.listAllDomains(0))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in _UNSUPPORTED:
                    raise
                # libvirt < 0.9.13: running ones by id, defined ones by name
                found = [self.conn.lookupByID(i) for i in self.conn.listDomainsID()]
                found += [self.conn.lookupByName(n) for n in self.conn.listDefinedDomains()]
        return sorted((self._info(dom) for dom in found), key=lambda d: d.name)

    def _info(self, dom: Any) -> DomainInfo:
        name = dom.name()
        with self._libvirt("read the state of", name):
            code = dom.info()[0]
            return DomainInfo(name=name, uuid=dom.UUIDString(),
                              state=STATE_NAMES.get(code, f"state {code}"),
                              active=bool(dom.isActive()), persistent=bool(dom.isPersistent()))

    def domain(self, name: str) -> DomainInfo:
        """One domain's name, uuid and state. Raises :class:`DomainNotFound`."""
        return self._info(self._domain(name))

    def exists(self, name: str) -> bool:
        try:
            self._domain(name)
        except DomainNotFound:
            return False
        return True

    def state(self, name: str) -> str:
        """``running``, ``shut off``, ``paused``... as ``virsh domstate`` says it."""
        return self.domain(name).state

    def has_managed_save(self, name: str) -> bool:
        """Whether the domain was saved with ``virsh managedsave`` (its memory is on disk)."""
        dom = self._domain(name)
        with self._libvirt("check the managed save image of", name):
            return bool(dom.hasManagedSaveImage(0))

    def dumpxml(self, name: str, inactive: bool = False) -> str:
        """The domain's XML: live (with the backing chains libvirt probed) or, with
        ``inactive``, the persistent definition the next start uses."""
        dom = self._domain(name)
        with self._libvirt("dump the XML of", name):
            return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0))

    def disks(self, name: str, inactive: bool = False) -> list[Disk]:
        """The domain's disks (see :func:`rehost.core.disks.parse_disks`)."""
        return parse_disks(self.dumpxml(name, inactive=inactive))

    # -- changes ------------------------------------------------------------------------------

    def power_off(
        self, name: str, timeout: float = 60.0, *, poll: float = 0.2, force: bool = True
    ) -> PowerOffResult:
        """Power the domain off: an ACPI shutdown request, then, if the guest has not gone off
        within ``timeout`` seconds, a forced stop (``destroy``). A paused guest cannot hear
        the request and is stopped at once. With ``force=False`` a guest that does not go off
        in time raises :class:`HypervisorError` instead (and keeps running).

        Returns ``"graceful"``, ``"forced"`` or ``"already off"``.
        """
        dom = self._domain(name)
        with self._libvirt("power off", name):
            if not dom.isActive():
                return "already off"
            paused = dom.info()[0] == libvirt.VIR_DOMAIN_PAUSED
        if paused:
            why = "it is paused and cannot hear a shutdown request"
        elif self._request_shutdown(dom, name) and self._wait_off(dom, name, timeout, poll):
            logger.info("{}: {} shut down gracefully", self.name, name)
            return "graceful"
        else:
            why = f"it did not shut down within {timeout:g} s"
        if not force:
            raise HypervisorError(f"{self.where}: domain {name!r} is still running: {why} "
                                  "(and forcing it off was not allowed)")
        logger.warning("{}: forcing {} off: {}", self.name, name, why)
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            with self._libvirt("power off", name):
                if not dom.isActive():  # it went off by itself in the meantime
                    return "graceful"
            raise self._error("force off", name, exc) from exc
        with self._libvirt("power off", name):
            if dom.isActive():
                raise HypervisorError(f"{self.where}: domain {name!r} is still running after "
                                      "a forced power-off")
        return "forced"

    def _request_shutdown(self, dom: Any, name: str) -> bool:
        """Ask the guest to shut down; False when the request could not be delivered."""
        try:
            dom.shutdown()
        except libvirt.libvirtError as exc:
            logger.warning("{}: ACPI shutdown of {} refused: {}", self.name, name,
                           exc.get_error_message())
            return False
        return True

    def _wait_off(self, dom: Any, name: str, timeout: float, poll: float) -> bool:
        """Poll until the domain is off or ``timeout`` seconds have passed."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._libvirt("power off", name):
            while dom.isActive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(poll, left))
        return True

    def undefine(
        self, name: str, *, discard_managed_save: bool = False, missing_ok: bool = False
    ) -> bool:
        """Remove the domain's definition; its disks are not touched. Returns False when there
        was nothing to undefine (only with ``missing_ok``).

        Refuses a running domain (:class:`PreconditionError`). A managed save image is the
        guest's memory: undefining would throw it away, so it is refused unless
        ``discard_managed_save``. UEFI variables (nvram) are always kept on disk. Snapshot
        metadata goes with the definition (the snapshots' data stays in the disk images).
        """
        try:
            dom = self._domain(name)
        except DomainNotFound:
            if missing_ok:
                return False
            raise
        with self._libvirt("undefine", name):
            if dom.isActive():
                raise PreconditionError(f"{self.where}: domain {name!r} is running: power it "
                                        "off before undefining it")
            managed = bool(dom.hasManagedSaveImage(0))
        if managed and not discard_managed_save:
            raise PreconditionError(
                f"{self.where}: domain {name!r} has a managed save image (its memory state): "
                "start it and shut it down first, or discard the image on purpose"
            )
        flags = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        if managed:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        # a driver that does not know KEEP_NVRAM has no nvram to remove; libvirt < 0.9.4
        # (CentOS 5) knows no flags at all
        attempts = [flags | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM, flags]
        with self._libvirt("undefine", name):
            for attempt in attempts:
                try:
                    dom.undefineFlags(attempt)
                    break
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() not in _UNSUPPORTED:
                        raise
            else:
                if managed:
                    raise HypervisorError(f"{self.where}: cannot undefine domain {name!r}: "
                                          "this libvirt cannot remove its managed save image")
                dom.undefine()
        logger.info("{}: undefined {}", self.name, name)
        return True

    def define(self, xml: str) -> DomainInfo:
        """Define (or redefine) a domain from its XML; returns it as the host now sees it."""
        found = re.search(r"<name>\s*([^<]*?)\s*</name>", xml)
        name = found.group(1) if found else None
        with self._libvirt("define", name):
            dom = self.conn.defineXML(xml)
        logger.info("{}: defined {}", self.name, dom.name())
        return self._info(dom)

    def start(self, name: str) -> bool:
        """Start the domain. Returns False (and does nothing) when it was running already."""
        dom = self._domain(name)
        with self._libvirt("start", name):
            if dom.isActive():
                return False
            dom.create()
        logger.info("{}: started {}", self.name, name)
        return True

    def stop(self, name: str) -> bool:
        """Stop the domain at once (``virsh destroy``: its disks are not touched). Returns
        False when it was not running."""
        dom = self._domain(name)
        with self._libvirt("stop", name):
            if not dom.isActive():
                return False
            dom.destroy()
        logger.info("{}: stopped {}", self.name, name)
        return True

    def resources(self, name: str) -> tuple[int, int]:
        """The domain's virtual CPUs and its memory in MiB (its maximum)."""
        dom = self._domain(name)
        with self._libvirt("read the resources of", name):
            info = dom.info()
        return int(info[3]), int(info[1]) // 1024

    # -- the host -----------------------------------------------------------------------------

    def capabilities(self) -> str:
        """``virsh capabilities``: the guests (architectures, emulators, machine types) the
        host offers."""
        with self._libvirt("read the capabilities"):
            return str(self.conn.getCapabilities())

    def domain_capabilities(self, emulator: str | None, arch: str, machine: str | None,
                            virttype: str) -> str | None:
        """``virsh domcapabilities``: what a domain of that kind can use here (CPU models).
        None where this libvirt cannot say (before 1.2.7)."""
        with self._libvirt("read the domain capabilities"):
            try:
                return str(self.conn.getDomainCapabilities(emulator, arch, machine, virttype,
                                                           0))
            except (AttributeError, libvirt.libvirtError):
                return None

    def facts(self, shell: Shell, datastore: str | None = None) -> HostFacts:
        """What the host says about itself: libvirt through this connection, the OS release and
        the datastore's free space through ``shell`` (ssh to the same host), in one command
        that runs while libvirt answers (:func:`rehost.core.facts.gather_facts`)."""
        from rehost.core.facts import gather_facts

        return gather_facts(self, shell, datastore)


def open_hypervisor(uri: str, *, name: str | None = None) -> Hypervisor:
    """A :class:`Hypervisor` already connected (so a wrong URI fails here, not later)."""
    hv = Hypervisor(uri, name=name)
    hv.connect()
    return hv
