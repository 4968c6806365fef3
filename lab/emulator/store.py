"""The emulator's database: its state kept in a file across a restart, as Abiquo keeps its own
in MySQL. Without it a restarted emulator would forget the load-level and fit-policy rules a
campaign made, a machine put ``HALTED``, a captured VM's deleted record — and a lab test could
not stop the API mid-campaign and bring it back as a real Abiquo server comes back.

What is kept: the machines' states and credentials, every VM record (deleted ones stay
deleted), the rules and the rule counter, and the tasks (so a task polled across a restart
is still found). Where each VM runs is not trusted from the file: at start the emulator asks
the hypervisors, as Abiquo's virtual system monitor does (:meth:`Emulator.discover`). A task
that was running when the emulator stopped ends ``FINISHED_UNSUCCESSFULLY`` (its worker died
with the process; real Abiquo's behaviour here is not known).

The file is written whole, atomically (a temporary file renamed over it), after each change.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from loguru import logger

from rehost.lab.emulator.inventory import VM, FitRule, Inventory, LoadRule, Task

#: the file in the lab's folder
FILE = "emulator-state.json"
_MACHINE_FIELDS = ("state", "user", "password", "ipmi_ip", "ipmi_port", "ipmi_user")


def snapshot(inv: Inventory) -> dict[str, Any]:
    """The inventory's state as plain data (the caller holds ``inv.lock``)."""
    return {
        "machines": {str(i): {f: getattr(m, f) for f in _MACHINE_FIELDS}
                     for i, m in inv.machines.items()},
        "vms": [dataclasses.asdict(v) for v in inv.vms.values()],
        "load_rules": [dataclasses.asdict(r) for r in inv.load_rules.values()],
        "fit_rules": [dataclasses.asdict(r) for r in inv.fit_rules.values()],
        "next_rule": inv._next_rule,
        "tasks": [dataclasses.asdict(t) for t in inv.tasks.values()],
    }


def save(inv: Inventory, path: Path) -> None:
    with inv.lock:
        data = snapshot(inv)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def load(inv: Inventory, path: Path) -> bool:
    """Restore the inventory from ``path``; False when there is no saved state."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return False
    with inv.lock:
        for key, fields in data["machines"].items():
            m = inv.machines.get(int(key))
            if m is not None:
                for f in _MACHINE_FIELDS:
                    setattr(m, f, fields[f])
        inv.vms = {int(v["id"]): VM(**v) for v in data["vms"]}
        inv.load_rules = {int(r["id"]): LoadRule(**r) for r in data["load_rules"]}
        inv.fit_rules = {int(r["id"]): FitRule(**r) for r in data["fit_rules"]}
        inv._next_rule = int(data["next_rule"])
        inv.tasks = {}
        for t in data["tasks"]:
            task = Task(**t)
            if task.state in ("PENDING", "STARTED"):
                task.state = "FINISHED_UNSUCCESSFULLY"
                for j in task.jobs:
                    if j.get("state") in ("PENDING", "STARTED"):
                        j["state"] = "FAILED"
                        j["description"] = f"{j.get('type', '').lower()}: the server restarted"
            inv.tasks[task.id] = task
    logger.info("emulator: state restored from {} ({} VMs, {} load-level rules)", path,
                len(inv.vms), len(inv.load_rules))
    return True
