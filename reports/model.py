"""The report model, built only from the journal (reporters observe; they change nothing)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from rehost.core.model import VM_STAGES

if TYPE_CHECKING:
    from rehost.core.journal import Journal

SCHEMA_VERSION = 1


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def _stages(journal: Journal, vm: str | None) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for ev in journal.events(vm) if vm is not None else journal._campaign_events():
        if ev.event == "start":
            if ev.stage not in out:
                order.append(ev.stage)
            out[ev.stage] = {"stage": ev.stage, "start": ev.ts, "end": None,
                             "outcome": "running", "result": None, "error": None}
        elif ev.stage in out:
            rec = out[ev.stage]
            rec["end"] = ev.ts
            if ev.event == "finish":
                rec["outcome"] = "done"
                rec["result"] = ev.data
            elif ev.event == "error":
                rec["outcome"] = "failed"
                rec["error"] = ev.data.get("error")
                rec["safe_point"] = ev.data.get("safe_point")
    return [out[s] for s in order]


def build_report(journal: Journal, *, campaign: str, storage: str, allocation: str,
                 hosts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything a report shows, as plain data (the JSON report is exactly this)."""
    vms = []
    for row in journal.vm_rows():
        data = row["vm"]
        stages = _stages(journal, row["name"])
        by = {s["stage"]: s for s in stages}
        down_from = by.get("power_off", {}).get("start")
        down_to = by.get("start", {}).get("end") if by.get("start", {}).get("outcome") == \
            "done" else None
        transfer = (by.get("transfer") or {}).get("result") or {}
        preserved = ((by.get("preserve_disks") or {}).get("result") or {}).get("disks", [])
        verify = (by.get("verify") or {}).get("result") or {}
        cleanup = (by.get("cleanup") or {}).get("result") or {}
        failed = next((s for s in stages if s["outcome"] == "failed"), None)
        vms.append({
            "name": row["name"],
            "uuid": row["uuid"],
            "label": data.get("label") or row["name"],
            "source_host": data.get("source_host"),
            "target_host": data.get("target_host"),
            "outcome": row["status"],
            "stage": row["stage"],
            "error": row["error"],
            "failed_stage": failed["stage"] if failed else None,
            "safe_point": failed.get("safe_point") if failed else None,
            "downtime_seconds": round(down_to - down_from, 1) if down_from and down_to else None,
            "bytes_moved": int(transfer.get("bytes", 0)),
            "transfer_seconds": transfer.get("seconds"),
            "rate_mib_s": transfer.get("rate_mib_s"),
            "verified": bool(verify.get("ok")),
            "verify_method": verify.get("method"),
            "backups_pending": cleanup.get("pending", [b["backup"] for b in preserved]
                                           if row["status"] != "done" else []),
            "disks": [{"path": d.get("path"), "backup": d.get("backup"), "size": d.get("size"),
                       "allocated": d.get("allocated"), "checksum": d.get("checksum"),
                       "format": d.get("format")} for d in preserved]
                     or [{"path": d.get("source"), "backup": None, "size": None,
                          "allocated": None, "checksum": None, "format": d.get("format")}
                         for d in data.get("disks", []) if d.get("type") == "file"],
            "stages": [{"stage": s["stage"], "start": _iso(s["start"]), "end": _iso(s["end"]),
                        "start_ts": s["start"], "end_ts": s["end"],
                        "seconds": round(s["end"] - s["start"], 3) if s["end"] else None,
                        "outcome": s["outcome"], "error": s["error"]} for s in stages],
        })
    camp = _stages(journal, None)
    fence = journal.get("fenced") or {}
    unfence = next((s.get("result") for s in reversed(camp) if s["stage"] == "unfence"), None)
    sources = {v["source_host"] for v in vms if v["source_host"]}
    left_on = {v["source_host"] for v in vms if v["outcome"] != "done" and v["source_host"]}
    starts = [s["start"] for s in camp] + [s["start_ts"] for v in vms for s in v["stages"]]
    ends = [s["end"] for s in camp if s["end"]] + [
        s["end_ts"] for v in vms for s in v["stages"] if s["end_ts"]]
    return {
        "schema_version": SCHEMA_VERSION,
        "campaign": campaign,
        "started": _iso(min(starts)) if starts else None,
        "finished": _iso(max(ends)) if ends else None,
        "storage_strategy": storage,
        "allocation_strategy": allocation,
        "stage_order": list(VM_STAGES),
        "rules_changed": fence,
        "rules_restored": unfence,
        "campaign_stages": [{"stage": s["stage"], "start": _iso(s["start"]),
                             "end": _iso(s["end"]), "outcome": s["outcome"],
                             "error": s["error"]} for s in camp],
        "totals": {
            "vms": len(vms),
            "done": sum(1 for v in vms if v["outcome"] == "done"),
            "failed": sum(1 for v in vms if v["outcome"] == "failed"),
            "pending": sum(1 for v in vms if v["outcome"] in ("pending", "running")),
            "bytes_moved": sum(v["bytes_moved"] for v in vms),
            "downtime_seconds": round(sum(v["downtime_seconds"] or 0 for v in vms), 1),
        },
        "hosts_emptied": sorted(sources - left_on),
        "backups_pending": [{"vm": v["label"], "host": v["source_host"], "path": b}
                            for v in vms for b in v["backups_pending"]],
        "vms": vms,
    }
