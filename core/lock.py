"""One rehost at a time per campaign: an exclusive lock on the state directory.

Two processes driving the same campaign would power off, undefine and deploy the same VMs and
write over each other's journal. Every command that changes something (``run``, ``resume``,
``confirm``, ``rollback``) takes ``STATE_DIR/lock`` with ``flock`` first and refuses, naming the
process that holds it, when another one has it. Read-only commands (``status``, ``plan``,
``report``, ``run --dry-run``) do not take it.

The kernel drops a ``flock`` when its process dies, however it dies: after a SIGKILL or a power
cut, ``rehost resume`` can go on at once, with no stale lock to remove by hand. The descriptor
is not inherited by the commands rehost starts (Python opens files non-inheritable), so a
lingering ssh master cannot keep the lock after rehost is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rehost.core.errors import RehostError

LOCK_NAME = "lock"


class CampaignBusy(RehostError):
    """Another rehost process holds the campaign's lock (exit code 2: nothing was done)."""

    exit_code = 2

    def __init__(self, campaign: str, holder: dict[str, Any] | None) -> None:
        self.holder = holder
        if holder:
            who = (f"pid {holder.get('pid')} on {holder.get('host')}, "
                   f"`{holder.get('command')}`, since {holder.get('started')}")
        else:
            who = "a process that has not said who it is yet"
        super().__init__(f"another rehost is working on campaign {campaign!r} ({who}); nothing "
                         "was done. Wait for it to finish (`rehost status` shows its progress) "
                         "or stop it, then try again")


def read_holder(state_dir: str | Path) -> dict[str, Any] | None:
    """Who holds (or last held) the lock, as it wrote itself down; None when unknown."""
    try:
        data = json.loads((Path(state_dir) / LOCK_NAME).read_text() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def holder(state_dir: str | Path) -> dict[str, Any] | None:
    """The process working on the campaign right now, or None when nobody holds the lock."""
    path = Path(state_dir) / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(state_dir) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class CampaignLock:
    """The exclusive lock of one campaign's state directory, held until :meth:`release`."""

    def __init__(self, state_dir: str | Path, campaign: str, command: str) -> None:
        self.dir = Path(state_dir)
        self.campaign = campaign
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`CampaignBusy` at once (never waits)."""
        if self._fd is not None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CampaignBusy(self.campaign, read_holder(self.dir)) from None
        except BaseException:
            os.close(fd)
            raise
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
              "started": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # nobody holds it now; the file stays (others may have it open)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> CampaignLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
