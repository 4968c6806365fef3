"""What a host says about itself (:class:`~rehost.core.model.HostFacts`), gathered in one go.

Two ways reach a host, and each is asked once, both at the same time:

- **ssh**: one command prints the OS release (``/etc/redhat-release``, else ``PRETTY_NAME`` of
  ``/etc/os-release``) and ``df -P -k`` of the datastore. The script is fixed; the datastore
  is its positional parameter (data, never code). Where the two answers were two commands, each
  ssh command costs a round trip and a remote shell start (0.2 to 0.3 s in the lab).
- **libvirt**: host name, libvirt and QEMU versions, CPUs and memory, through the connection of
  the calling thread. The first connection dominates (an ssh handshake with ``qemu+ssh``), and
  on a libvirtd that has not run a QEMU yet, asking the QEMU version makes it probe its
  emulators first (4 to 8 s the first time, then cached by libvirtd).

Errors are those the separate commands raised: a failing ``df`` is a
:class:`~rehost.core.errors.RemoteError` naming ``df -P -k -- DATASTORE`` with its exit code and
its message; libvirt's are :class:`~rehost.core.errors.HypervisorError`. Timings are logged at
debug level, what took longest first.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger

from rehost.core.errors import RemoteError
from rehost.core.model import HostFacts
from rehost.core.remote import Shell

if TYPE_CHECKING:
    from rehost.core.hypervisor import Hypervisor

T = TypeVar("T")

#: $1 a token that marks the section ends (random: no file content can forge it), $2 the
#: datastore ("" for none). Sections: the release file, os-release, df's output and stderr.
FACTS_SCRIPT = (
    't=$1; d=$2; '
    "cat /etc/redhat-release 2>/dev/null; s=$?; printf '\\n%s release %s\\n' \"$t\" \"$s\"; "
    "cat /etc/os-release 2>/dev/null; s=$?; printf '\\n%s os-release %s\\n' \"$t\" \"$s\"; "
    'if [ -n "$d" ]; then exec 3>&1; e=$(df -P -k -- "$d" 2>&1 >&3); s=$?; exec 3>&-; '
    "printf '\\n%s df %s\\n' \"$t\" \"$s\"; printf '%s\\n' \"$e\"; "
    "printf '%s df-stderr 0\\n' \"$t\"; fi"
)


@dataclass
class ReadHost:
    """The ssh side of a host's facts."""

    release: str
    free_bytes: int | None
    seconds: float = 0.0


@dataclass
class Timings:
    """Where the time of one host's facts went (seconds)."""

    total: float = 0.0
    libvirt_connect: float = 0.0
    libvirt_calls: float = 0.0
    qemu_version: float = 0.0
    ssh: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [(self.libvirt_connect, "libvirt connection"),
                 (self.libvirt_calls, "libvirt calls"),
                 (self.qemu_version, "QEMU version from libvirt"),
                 (self.ssh, "ssh (one command)")]
        shown = ", ".join(f"{what} {secs:.2f} s"
                          for secs, what in sorted(parts, key=lambda p: -p[0]))
        if self.qemu_version > 1.0:
            shown += " — libvirtd probed its QEMU binaries (first use since it started)"
        return f"{self.total:.2f} s: {shown}"


def _sections(out: str, token: str) -> dict[str, tuple[int, str]]:
    """The script's output cut at its markers: name -> (status, text before the marker)."""
    found: dict[str, tuple[int, str]] = {}
    lines: list[str] = []
    for line in out.split("\n"):
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == token and parts[2].isdigit():
            found[parts[1]] = (int(parts[2]), "\n".join(lines))
            lines = []
        else:
            lines.append(line)
    return found


def read_host(shell: Shell, datastore: str | None) -> ReadHost:
    """The OS release and the datastore's free bytes, in one command."""
    started = time.monotonic()
    token = secrets.token_hex(8)
    out = shell.run(["sh", "-c", FACTS_SCRIPT, "rehost-facts", token, datastore or ""]).stdout
    parts = _sections(out, token)
    if "os-release" not in parts or (datastore and "df-stderr" not in parts):
        raise RemoteError(shell.name, ["sh", "-c", "rehost-facts"],
                          f"gave an answer rehost cannot read: {out[-300:]!r}")
    status, text = parts["release"]
    release = ""
    if status == 0 and text.strip():
        release = text.strip().splitlines()[0]
    else:
        # not a Red Hat family host: say what it is, for the report
        release = "unknown"
        for line in parts["os-release"][1].splitlines():
            if line.startswith("PRETTY_NAME="):
                release = line.split("=", 1)[1].strip().strip('"')
                break
    free: int | None = None
    if datastore:
        argv = ["df", "-P", "-k", "--", datastore]
        status, text = parts["df"]
        stderr = parts["df-stderr"][1]
        if status != 0:
            raise RemoteError(shell.name, argv, f"exited with {status}", status, text, stderr)
        lines = text.splitlines()
        # line 1, not the last: a mount point may hold a newline
        fields = lines[1].split() if len(lines) > 1 else []
        if len(fields) < 4 or not fields[3].isdigit():
            raise RemoteError(shell.name, argv, f"gave an answer rehost cannot read: {lines!r}")
        free = int(fields[3]) * 1024
    return ReadHost(release, free, time.monotonic() - started)


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    value = call()
    return value, time.monotonic() - started


def gather_facts(hv: Hypervisor, shell: Shell, datastore: str | None = None) -> HostFacts:
    """A host's facts: libvirt through ``hv`` (in this thread: a connection is not shared)
    while the ssh command runs in another thread. A libvirt error wins over an ssh one (it
    is the one the host's facts met first when they were read one after the other)."""
    from rehost.core.hypervisor import parse_centos_release, version_string

    started = time.monotonic()
    timings = Timings()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"facts-{hv.name}") as pool:
        ssh = pool.submit(read_host, shell, datastore)
        with hv._libvirt("read the host facts"):
            _, timings.libvirt_connect = _timed(hv.connect)
            conn: Any = hv.conn
            (hostname, lib, info), timings.libvirt_calls = _timed(
                lambda: (str(conn.getHostname()), int(conn.getLibVersion()), conn.getInfo()))
            qemu, timings.qemu_version = _timed(lambda: int(conn.getVersion()))
        read = ssh.result()
    timings.ssh = read.seconds
    timings.total = time.monotonic() - started
    logger.debug("{}: host facts in {}", hv.name, timings.summary())
    major, version = parse_centos_release(read.release)
    return HostFacts(
        hostname=hostname,
        os_release=read.release,
        centos_major=major,
        centos_version=version,
        libvirt_version=version_string(lib),
        qemu_version=version_string(qemu),
        cpus=int(info[2]),
        memory_mib=int(info[1]),
        datastore=datastore,
        datastore_free_bytes=read.free_bytes,
    )
