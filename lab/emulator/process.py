"""Start the lab's Abiquo emulator as a background process (``rehost lab up`` calls this).

``down`` stops it by the pid recorded in ``lab.json`` (``state["emulator"]["pid"]``).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rehost.abiquo.errors import AbiquoError
from rehost.core.errors import LabError

USER = "admin"


def write_password_file(path: Path) -> str:
    """A fresh random password in a file only root can read."""
    password = secrets.token_urlsafe(24)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def start_emulator(state: dict[str, Any], timeout: float = 60.0, *,
                   port: int = 0) -> dict[str, Any]:
    """Spawn ``python -m rehost.lab.emulator --lab-dir ROOT`` (log: ROOT/emulator.log), wait
    until it answers an authenticated request, and return what the lab records about it.
    ``port``: the port to listen on (a restart keeps the site config's URL and password)."""
    from rehost.abiquo.client import AbiquoClient

    root = Path(state["root"])
    version = str(state.get("abiquo") or "2.6")  # the emulator's profile is the version
    password_file = root / "abiquo-password"
    if port and password_file.exists():
        password = password_file.read_text().strip()
    else:
        password = write_password_file(password_file)
    info_file = root / "emulator.json"
    info_file.unlink(missing_ok=True)
    log = root / "emulator.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rehost.lab.emulator", "--lab-dir", str(root),
             "--user", USER, "--password-file", str(password_file), "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    last = "it wrote no emulator.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"lab: the Abiquo emulator exited with {proc.returncode}: "
                           f"{_tail(log)}")
        if info_file.exists():
            info = json.loads(info_file.read_text())
            client = AbiquoClient(info["url"], USER, password, version=version, retries=1,
                                  timeout=5)
            try:
                client.datacenters()
                return {"pid": proc.pid, "url": info["url"], "port": info["port"],
                        "user": USER, "password_file": str(password_file),
                        "version": version, "log": str(log)}
            except AbiquoError as exc:
                last = str(exc)
            finally:
                client.close()
        time.sleep(0.1)
    proc.terminate()
    proc.wait(10)
    raise LabError(f"lab: the Abiquo emulator did not answer within {timeout:g} s ({last}); "
                   f"see {log}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_emulator(root: Path) -> None:
    """Stop the lab's emulator (SIGTERM) as an Abiquo server going down: its state stays in
    its state file, and :func:`restart_emulator` brings it back."""
    from rehost.lab.hosts import stop_pids
    from rehost.lab.lab import load_state

    st = load_state(root)
    if st is None or not (st.data.get("emulator") or {}).get("pid"):
        raise LabError(f"lab: no Abiquo emulator recorded in {root}")
    stop_pids([int(st.data["emulator"]["pid"])])


def restart_emulator(root: Path) -> dict[str, Any]:
    """Start the lab's emulator again on the same port, with the same password and the state
    it kept (after :func:`stop_emulator`, or a crash); the lab's record gets the new pid."""
    from rehost.lab.hosts import stop_pids
    from rehost.lab.lab import _save_state, load_state

    st = load_state(root)
    if st is None or not st.data.get("emulator"):
        raise LabError(f"lab: no Abiquo emulator recorded in {root}")
    old = st.data["emulator"]
    stop_pids([int(old["pid"])])  # if it still runs
    data = dict(st.data)
    # the server binds with SO_REUSEADDR: the port is free again once the old process ended
    data["emulator"] = start_emulator(data, port=int(old["port"]))
    _save_state(root, data)
    return dict(data["emulator"])
