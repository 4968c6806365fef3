"""The campaign journal: every VM's progress, written durably before and after every stage.

SQLite in WAL mode with ``synchronous=FULL``: a row is on disk when the call returns, so a run
killed at any moment (SIGKILL included) leaves a journal that says which stages finished, which
started and did not finish, and what each stage found. ``rehost resume`` and ``rehost status``
read it; the reports are built from it.

Nothing secret is ever written here: stage results are facts about disks, hosts and states.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehost.core.model import VM

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vms (
    name TEXT PRIMARY KEY,
    uuid TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,          -- pending, running, done, failed
    stage TEXT,                    -- the last stage that started
    error TEXT,
    data TEXT NOT NULL             -- VM.to_dict()
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    vm TEXT,                       -- NULL for campaign stages
    stage TEXT NOT NULL,
    event TEXT NOT NULL,           -- start, finish, error, skip
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_vm ON events (vm, stage);
"""


@dataclass(frozen=True)
class Event:
    id: int
    ts: float
    vm: str | None
    stage: str
    event: str
    data: dict[str, Any]


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str, sort_keys=True)


class Journal:
    """One campaign's journal in ``state_dir/journal.sqlite``. Thread-safe."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "journal.sqlite"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- campaign-level facts -----------------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       (key, _dumps(value)))

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- VMs ----------------------------------------------------------------------------------

    def add_vm(self, vm: VM, position: int) -> None:
        """Record a VM of the campaign, unless the journal knows it already (resume)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO vms (name, uuid, position, status, stage, error, data) "
                "VALUES (?, ?, ?, 'pending', NULL, NULL, ?)",
                (vm.name, vm.uuid, position, _dumps(vm.to_dict())),
            )

    def save_vm(self, vm: VM) -> None:
        with self._tx() as db:
            db.execute("UPDATE vms SET data = ? WHERE name = ?", (_dumps(vm.to_dict()), vm.name))

    def load_vm(self, name: str) -> VM | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM vms WHERE name = ?", (name,)).fetchone()
        return None if row is None else VM.from_dict(json.loads(row[0]))

    def vm_rows(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, uuid, status, stage, error, data FROM vms ORDER BY position"
            ).fetchall()
        return [{"name": r[0], "uuid": r[1], "status": r[2], "stage": r[3], "error": r[4],
                 "vm": json.loads(r[5])} for r in rows]

    def set_status(self, name: str, status: str, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE vms SET status = ?, error = ? WHERE name = ?",
                       (status, error, name))

    # -- stage events -------------------------------------------------------------------------

    def record(self, vm: VM | None, stage: str, event: str, data: Any = None) -> None:
        """Append a stage event; for a VM also save its record and current stage, in the same
        transaction."""
        payload = _dumps(data if data is not None else {})
        with self._tx() as db:
            db.execute("INSERT INTO events (ts, vm, stage, event, data) VALUES (?, ?, ?, ?, ?)",
                       (time.time(), vm.name if vm else None, stage, event, payload))
            if vm is not None:
                status = {"start": "running", "error": "failed"}.get(event)
                if status:
                    db.execute("UPDATE vms SET stage = ?, status = ?, data = ? WHERE name = ?",
                               (stage, status, _dumps(vm.to_dict()), vm.name))
                else:
                    db.execute("UPDATE vms SET data = ? WHERE name = ?",
                               (_dumps(vm.to_dict()), vm.name))

    def events(self, vm: str | None = None) -> list[Event]:
        query = "SELECT id, ts, vm, stage, event, data FROM events"
        args: tuple[Any, ...] = ()
        if vm is not None:
            query += " WHERE vm = ?"
            args = (vm,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [Event(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def finished_stages(self, vm: str | None) -> dict[str, dict[str, Any]]:
        """The stages that finished (or were skipped) for a VM (None: the campaign), with the
        result of their last run. A VM rolled back is where it was before the campaign: what
        it did before the rollback no longer counts (moved again, it starts over)."""
        out: dict[str, dict[str, Any]] = {}
        for ev in self.events(vm) if vm is not None else self._campaign_events():
            if ev.stage == "rollback":
                if ev.event == "finish":
                    out.clear()
                continue
            if ev.event in ("finish", "skip"):
                out[ev.stage] = ev.data
            elif ev.event == "start":
                out.pop(ev.stage, None)
        return out

    def _campaign_events(self) -> list[Event]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, ts, vm, stage, event, data FROM events WHERE vm IS NULL ORDER BY id"
            ).fetchall()
        return [Event(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]
