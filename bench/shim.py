"""rehost's command line with its waits timed: ``python -m bench.shim ARGS...`` runs
``rehost ARGS...`` in this process, and at exit writes to ``$REHOST_BENCH_TRACE`` (JSON):

- ``waits``: every interval, per thread, that rehost spent waiting on something outside itself:
  a remote command (``Shell.run``, copies included), a local process (``subprocess``), a
  libvirt call (every method of ``virConnect`` and ``virDomain``, and ``libvirt.open``), the
  network (socket and TLS reads, writes and connects: the Abiquo API over HTTP, SMTP), a sleep
  in a polling loop, or a helper thread it waits for (``Future.result``, ``Thread.join``,
  ``Event.wait``). Nested waits count once (the outermost interval of each thread);
- ``rusage``: ``getrusage(RUSAGE_SELF)`` at exit: the CPU seconds of rehost's own threads (not
  of the commands it ran) and its peak memory (``ru_maxrss``, KiB).

Times are ``time.time()``, as in the journal, so that the bench can subtract the waits from
the journal's stage intervals (``bench/suite.py``, "own time"). Nothing of rehost is changed:
the wrappers are installed around the library calls before rehost's CLI starts.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_now = time.time
_sleep = time.sleep
_waits: list[tuple[int, float, float, str]] = []
_names: dict[int, str] = {}
_depth = threading.local()
_lock = threading.Lock()


def _timed(kind: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_depth, "n", 0)
        if depth:
            return function(*args, **kwargs)
        _depth.n = 1
        began = _now()
        try:
            return function(*args, **kwargs)
        finally:
            _depth.n = 0
            ended = _now()
            me = threading.current_thread()
            with _lock:
                _waits.append((me.ident or 0, began, ended, kind))
                _names.setdefault(me.ident or 0, me.name)
    return call


def _wrap(owner: Any, names: list[str], kind: str) -> None:
    for name in names:
        original = getattr(owner, name, None)
        if callable(original):
            setattr(owner, name, _timed(kind, original))


def install() -> None:
    from rehost.core import remote

    _wrap(remote.Shell, ["run"], "remote")
    _wrap(subprocess.Popen, ["communicate", "wait"], "subprocess")
    _wrap(time, ["sleep"], "sleep")
    _wrap(socket.socket, ["connect", "recv", "recv_into", "recvfrom", "send", "sendall",
                          "accept"], "network")
    _wrap(ssl.SSLSocket, ["do_handshake", "read", "recv", "recv_into", "write", "send",
                          "sendall"], "network")
    _wrap(Future, ["result"], "helper thread")
    _wrap(threading.Thread, ["join"], "helper thread")
    _wrap(threading.Event, ["wait"], "helper thread")
    try:
        import libvirt
    except ImportError:  # pragma: no cover - rehost needs it
        return
    _wrap(libvirt, ["open", "openAuth", "openReadOnly"], "libvirt")
    for cls in (libvirt.virConnect, libvirt.virDomain):
        _wrap(cls, [n for n in vars(cls) if not n.startswith("_")], "libvirt")


def _dump(path: str) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with _lock:
        waits, names = list(_waits), dict(_names)
    data = {"main": threading.main_thread().ident, "names": names,
            "waits": waits,
            "rusage": {"user": usage.ru_utime, "system": usage.ru_stime,
                       "maxrss_kib": usage.ru_maxrss},
            "exited": _now()}
    with open(path, "w") as f:
        json.dump(data, f)


def main() -> None:
    trace = os.environ.get("REHOST_BENCH_TRACE")
    install()
    if trace:
        atexit.register(_dump, trace)
    from rehost.core.cli import main as rehost

    sys.argv[0] = "rehost"
    rehost()


if __name__ == "__main__":
    main()
