"""What the benchmarks share: running rehost as a child process (timed, its waits traced), and
reading the numbers of a campaign back from its journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the lab instance the benchmarks use unless told (REHOST_LAB_INSTANCE=N for another)
os.environ.setdefault("REHOST_LAB_INSTANCE", "60")

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    """One ``rehost`` command, run as a child process through ``bench.shim``."""

    argv: list[str]
    returncode: int
    seconds: float
    stdout: str
    stderr: str
    #: from the shim: the waits per thread, rehost's own CPU seconds and peak memory
    trace: dict[str, Any] = field(default_factory=dict)
    #: ``wait4``'s account of the child (its own and its waited-for children's)
    maxrss_kib_wait4: int = 0

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def maxrss_mib(self) -> float:
        return float(self.trace.get("rusage", {}).get("maxrss_kib", 0)) / 1024

    @property
    def cpu_seconds(self) -> float:
        usage = self.trace.get("rusage", {})
        return float(usage.get("user", 0.0)) + float(usage.get("system", 0.0))

    def tail(self, lines: int = 15) -> str:
        return "\n".join((self.stdout + self.stderr).splitlines()[-lines:])


def rehost(*args: str, env: dict[str, str] | None = None) -> Run:
    """``rehost ARGS`` as a child process (``python -m bench.shim``), timed, its waits
    traced. Its peak memory is the shim's ``ru_maxrss`` (RUSAGE_SELF at its exit); the
    parent's ``wait4`` gives the child's account too (the larger of it and the commands it
    reaped), for comparison."""
    with tempfile.NamedTemporaryFile(prefix="rehost-bench-trace-", suffix=".json",
                                     delete=False) as f:
        trace_path = f.name
    child_env = {**os.environ, **(env or {}), "REHOST_BENCH_TRACE": trace_path,
                 "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                             os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "bench.shim", *args]
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=child_env, cwd=str(REPO))
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage, not the bench's
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    maxrss = usage.ru_maxrss
    trace: dict[str, Any] = {}
    try:
        trace = json.loads(Path(trace_path).read_text() or "{}")
    except (OSError, ValueError):
        pass
    finally:
        Path(trace_path).unlink(missing_ok=True)
    return Run(list(args), proc.returncode, seconds, stdout, stderr, trace, maxrss)


@dataclass
class Stage:
    vm: str | None
    stage: str
    start: float
    end: float | None
    outcome: str  # finish, skip, error, running

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


def stages(state_dir: Path) -> list[Stage]:
    """Every stage of the journal in ``state_dir``: start, end, outcome (in order)."""
    from rehost.core.journal import Journal

    journal = Journal(state_dir)
    try:
        events = journal.events()
    finally:
        journal.close()
    out: list[Stage] = []
    open_: dict[tuple[str | None, str], Stage] = {}
    for e in events:
        key = (e.vm, e.stage)
        if e.event == "start":
            open_[key] = Stage(e.vm, e.stage, e.ts, None, "running")
            out.append(open_[key])
        elif key in open_:
            s = open_.pop(key)
            s.end, s.outcome = e.ts, e.event
    return out


def stage_seconds(all_stages: list[Stage], vm: str | None, stage: str) -> float | None:
    for s in all_stages:
        if s.vm == vm and s.stage == stage and s.outcome in ("finish", "skip"):
            return s.seconds
    return None


def downtime(all_stages: list[Stage], vm: str) -> float | None:
    """From the start of ``power_off`` to the end of ``start`` (as the report counts it)."""
    off = next((s for s in all_stages if s.vm == vm and s.stage == "power_off"), None)
    on = next((s for s in all_stages if s.vm == vm and s.stage == "start"
               and s.outcome == "finish"), None)
    if off is None or on is None or on.end is None:
        return None
    return on.end - off.start


def vm_results(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Each VM of the journal by its label: its domain name and its stage results."""
    from rehost.core.journal import Journal

    journal = Journal(state_dir)
    try:
        rows = journal.vm_rows()
    finally:
        journal.close()
    return {(r["vm"].get("label") or r["name"]): {"name": r["name"], "status": r["status"],
                                                  "error": r["error"], "vm": r["vm"]}
            for r in rows}


def union_within(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of ``[lo, hi]`` covered by the union of ``intervals``."""
    cut = sorted((max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi)
    total, end = 0.0, lo
    for a, b in cut:
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total
