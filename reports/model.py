"""The report model, built only from the journal (reporters observe; they change nothing).

Every format renders this one model: the JSON report *is* it (schema in
``reports/schema/report.schema.json``, documented in ``docs/report-json.md``), the Markdown and
HTML reports are jinja2 templates over it. Secrets never enter it: the journal holds none, and
any secret string the caller knows is redacted from every text before a template sees it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from rehost.core.types import (
    VM_STAGES,
    BackupDisksResult,
    CleanupResult,
    DeployResult,
    PreserveResult,
    Result,
    RollbackResult,
    TransferResult,
    VerifyResult,
    load_result,
)

if TYPE_CHECKING:
    from rehost.core.journal import Journal

R = TypeVar("R", bound=Result)

SCHEMA_VERSION = 1
REDACTED = "[redacted]"

#: What a stage's last journal event says about it.
_OUTCOME = {"finish": "done", "error": "failed", "skip": "skipped"}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def _seconds(start: float | None, end: float | None, digits: int = 3) -> float | None:
    if start is None or end is None:
        return None
    return round(end - start, digits)


def _stages(journal: Journal, vm: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each stage's last run (in the order stages first started), and every error event."""
    out: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    for ev in journal.events(vm) if vm is not None else journal._campaign_events():
        if ev.event == "start":
            runs = out[ev.stage]["runs"] + 1 if ev.stage in out else 1
            out.pop(ev.stage, None)  # a stage run again (resume) counts where it ran last
            out[ev.stage] = {"stage": ev.stage, "start": ev.ts, "end": None,
                             "outcome": "running", "result": None, "error": None,
                             "safe_point": None, "runs": runs}
            continue
        rec = out.setdefault(ev.stage, {"stage": ev.stage, "start": ev.ts, "end": None,
                                        "outcome": "running", "result": None, "error": None,
                                        "safe_point": None, "runs": 0})
        rec["end"] = ev.ts
        rec["outcome"] = _OUTCOME.get(ev.event, ev.event)
        if ev.event in ("finish", "skip"):
            rec["result"] = ev.data
        elif ev.event == "error":
            rec["error"] = ev.data.get("error")
            rec["safe_point"] = ev.data.get("safe_point")
            errors.append({"stage": ev.stage, "time": _iso(ev.ts),
                           "error": str(ev.data.get("error") or ""),
                           "type": ev.data.get("type"),
                           "safe_point": ev.data.get("safe_point")})
    stages = sorted(out.values(), key=lambda s: s["start"])
    return stages, errors


def _stage_row(s: dict[str, Any]) -> dict[str, Any]:
    return {"stage": s["stage"], "start": _iso(s["start"]), "end": _iso(s["end"]),
            "start_ts": s["start"], "end_ts": s["end"], "seconds": _seconds(s["start"], s["end"]),
            "outcome": s["outcome"], "error": s["error"], "runs": s["runs"]}


def _result(by: dict[str, dict[str, Any]], cls: type[R]) -> R | None:
    """A stage's journaled result, read as its type (None if it has not finished)."""
    found = load_result(cls.stage, (by.get(cls.stage) or {}).get("result"))
    return found if isinstance(found, cls) else None


def _disks(data: dict[str, Any], by: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    preserved = _result(by, PreserveResult)
    transfer = _result(by, TransferResult)
    verify = _result(by, VerifyResult)
    transferred = transfer.disks if transfer else []
    verified = {d.path: d for d in verify.disks} if verify else {}
    if preserved is None:  # not preserved yet: what the domain XML listed
        return [{"path": d.get("source"), "backup": None, "format": d.get("format"),
                 "shared": None, "shared_why": None, "precopied": None,
                 "precopy_bytes": None, "precopy_note": None,
                 "size": None, "virtual_size": None,
                 "allocated": None, "bytes_moved": 0,
                 "checksum": None,
                 "algorithm": None, "checksum_verified": False}
                for d in data.get("disks", []) if d.get("type", "file") == "file"]
    out = []
    for i, d in enumerate(preserved.disks):
        moved = next((c for c in transferred if c.path == d.backup),
                     transferred[i] if i < len(transferred) else None)
        check = verified.get(d.path)
        # the shared strategy says per disk whether it was shared or copied, and why
        extra = (moved.model_extra or {}) if moved else {}
        shared = extra.get("shared")
        out.append({"path": d.path, "backup": d.backup, "format": d.format,
                    "shared": shared if isinstance(shared, bool) else None,
                    "shared_why": str(extra["why"]) if extra.get("why") else None,
                    # pre-copy: staged while the VM ran (then bytes_moved is the delta), or
                    # why it fell back to a full copy
                    "precopied": (extra["precopied"] if isinstance(extra.get("precopied"),
                                                                   bool) else None),
                    "precopy_bytes": (int(extra["precopy_bytes"])
                                      if isinstance(extra.get("precopy_bytes"), int) else None),
                    "precopy_note": str(extra["precopy"]) if extra.get("precopy") else None,
                    "size": d.size, "virtual_size": d.virtual_size, "allocated": d.allocated,
                    "bytes_moved": moved.bytes if moved else 0,
                    "checksum": d.checksum, "algorithm": d.algorithm,
                    "checksum_verified": bool(d.checksum) and check is not None
                    and check.checksum == d.checksum})
    return out


def _backups(journal: Journal, vm: str,
             by: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The copies ``backup_disks`` made before the window (None: none made)."""
    made = _result(by, BackupDisksResult)
    if made is None or made.skipped or not made.backups:
        return None
    extra = made.model_extra or {}
    return {"strategy": made.strategy, "kept": bool(extra.get("kept", True)),
            "deleted": bool(journal.get(f"backup-deleted:{vm}")),
            "disks": [{"path": b.path, "host": b.host, "location": b.location, "size": b.size,
                       "allocated": b.allocated, "checksum": b.checksum,
                       "algorithm": b.algorithm,
                       "changed_while_read": bool((b.model_extra or {}).get(
                           "changed_while_read"))}
                      for b in made.backups]}


def _vm(journal: Journal, row: dict[str, Any]) -> dict[str, Any]:
    data = row["vm"]
    stages, errors = _stages(journal, row["name"])
    by = {s["stage"]: s for s in stages}
    power_off, start = by.get("power_off"), by.get("start")
    rollback = by.get("rollback")
    if rollback and rollback["outcome"] == "done":
        start = rollback  # back on its source host: the downtime ended there
    down_from = power_off["start"] if power_off else None
    down_to = start["end"] if start and start["outcome"] == "done" else None
    transfer = _result(by, TransferResult)
    verify = _result(by, VerifyResult)
    cleaned = _result(by, CleanupResult)
    rolled = _result(by, RollbackResult)
    deploy = _result(by, DeployResult)
    disks = _disks(data, by)
    failed = next((s for s in stages if s["outcome"] == "failed"), None)
    if rolled is not None:
        pending = list(rolled.pending)
    elif cleaned is not None:
        pending = list(cleaned.pending)
    else:  # not cleaned up: every backup made is still there
        pending = [d["backup"] for d in disks if d["backup"]]
    return {
        "name": row["name"],
        "uuid": row["uuid"],
        "label": data.get("label") or row["name"],
        "source_host": data.get("source_host"),
        "target_host": data.get("target_host"),
        "outcome": row["status"],
        "stage": row["stage"],
        "error": row["error"],
        "failed_stage": failed["stage"] if failed else None,
        "safe_point": failed["safe_point"] if failed else None,
        "downtime_start": _iso(down_from),
        "downtime_end": _iso(down_to),
        "downtime_seconds": _seconds(down_from, down_to, 1),
        "still_down": down_from is not None and down_to is None,
        "bytes_moved": transfer.bytes if transfer else 0,
        "transfer_seconds": transfer.seconds if transfer else None,
        "rate_mib_s": transfer.rate_mib_s if transfer else None,
        "transfer_strategy": transfer.strategy if transfer else None,
        "shared_datastore": transfer.shared if transfer else None,
        "verified": bool(verify and verify.ok),
        "verify_method": verify.method if verify else None,
        "xml_changes": [c.model_dump(mode="json") for c in deploy.xml_changes]
        if deploy else [],
        "checksum_verified": bool(disks) and all(d["checksum_verified"] for d in disks),
        "backups_pending": pending,
        "backups": _backups(journal, row["name"], by),
        "disks": disks,
        "errors": errors,
        "stages": [_stage_row(s) for s in stages],
    }


def _summarize(record: Any) -> str:
    """One line for a rule record: its plain facts, without the API links."""
    if not isinstance(record, dict):
        return str(record)
    first = [k for k in ("machine", "host", "datacenter", "name") if k in record]
    keys = first + [k for k in record if k not in first]
    parts = [f"{k} {record[k]}" for k in keys
             if k not in ("url", "target", "href", "rel") and not isinstance(record[k],
                                                                        (dict, list))]
    return ", ".join(parts) or str(record)


def _rules(phase: str, result: Any) -> list[dict[str, str]]:
    if not isinstance(result, dict):
        return []
    out = []
    for action, records in result.items():
        if not isinstance(records, (list, dict)):
            continue  # a note such as the strategy's name, not a rule
        for rec in records if isinstance(records, list) else [records]:
            out.append({"phase": phase, "action": str(action), "detail": _summarize(rec)})
    return out


def _hosts(vms: list[dict[str, Any]],
           hosts: dict[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Every source and target host: what moved off and onto it, what is left on it."""
    known = dict(hosts or {})
    names = list(known)
    for v in vms:
        for h in (v["source_host"], v["target_host"]):
            if h and h not in names:
                names.append(h)
    out = []
    for h in names:
        info = known.get(h, {})
        off = [v for v in vms if v["source_host"] == h]
        role = info.get("role") or ("source" if off else "target")
        left = [v["label"] for v in off if v["outcome"] != "done"]
        domains = info.get("domains")
        pending = sum(len(v["backups_pending"]) for v in off)
        emptied = role == "source" and not left and not domains
        out.append({
            "name": h,
            "role": role,
            "vms_moved_off": sum(1 for v in off if v["outcome"] == "done"),
            "vms_moved_on": sum(1 for v in vms if v["target_host"] == h and v["outcome"] == "done"
                                and v["source_host"] != h),
            "vms_left": left,
            "domains_left": domains,
            "checked": domains is not None,
            "emptied": emptied,
            "backups_pending": pending,
        })
    return out


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """The same data with every secret string replaced (keys and values, recursively)."""
    words = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    if not words:
        return value

    def scrub(v: Any) -> Any:
        if isinstance(v, str):
            for w in words:
                v = v.replace(w, REDACTED)
            return v
        if isinstance(v, dict):
            return {scrub(k): scrub(x) for k, x in v.items()}
        if isinstance(v, list):
            return [scrub(x) for x in v]
        return v

    return scrub(value)


def _waves(evacuation: dict[str, Any] | None) -> list[dict[str, Any]]:
    """An evacuation's waves, done ones first, then the one running."""
    if not evacuation:
        return []
    joined = set(evacuation.get("joined") or [])
    rows = [(w, "done") for w in evacuation.get("waves") or []]
    if evacuation.get("current"):
        rows.append((evacuation["current"], "running"))
    return [{"number": int(w["number"]), "host": w["host"], "rack": w.get("rack", ""),
             "vms": [m["label"] for m in w.get("moves", [])],
             "targets": sorted({m["target"] for m in w.get("moves", [])}),
             "estimate_s": float(w.get("estimate_s", 0.0)), "status": status,
             "rejoined": w["host"] in joined} for w, status in rows]


def build_report(journal: Journal, *, campaign: str, storage: str, allocation: str,
                 hosts: dict[str, dict[str, Any]] | None = None,
                 secrets: Iterable[str] = (), now: float | None = None) -> dict[str, Any]:
    """Everything a report shows, as plain data (the JSON report is exactly this).

    :param hosts: what is known of the site's hosts by name: ``role`` (source, target) and
        ``domains`` (the domains still defined there when the report was made; None when not
        looked at). A source host is emptied only when nothing of the campaign is left on it
        and no domain was seen there.
    :param secrets: strings that must never appear in a report (redacted wherever found).
    """
    vms = [_vm(journal, row) for row in journal.vm_rows()]
    camp, camp_errors = _stages(journal, None)
    if camp and camp[-1]["stage"] == "report" and camp[-1]["outcome"] == "running":
        camp.pop()  # the stage writing this very report: not news to its reader
    fence = journal.get("fenced")
    unfence = next((s["result"] for s in reversed(camp)
                    if s["stage"] == "unfence" and s["outcome"] == "done"), None)
    starts = [s["start"] for s in camp] + [s["start_ts"] for v in vms for s in v["stages"]]
    ends = [s["end"] for s in camp if s["end"]] + [
        s["end_ts"] for v in vms for s in v["stages"] if s["end_ts"]]
    host_rows = _hosts(vms, hosts)
    moved = [v for v in vms if v["outcome"] == "done"]
    down = [v["downtime_seconds"] for v in vms if v["downtime_seconds"] is not None]
    transfer_seconds = sum(v["transfer_seconds"] or 0 for v in vms)
    bytes_moved = sum(v["bytes_moved"] for v in vms)
    failed = [v for v in vms if v["outcome"] == "failed"]
    unfinished = [v for v in vms if v["outcome"] in ("pending", "running", "interrupted",
                                                     "held")]
    report = {
        "schema_version": SCHEMA_VERSION,
        "generated": _iso(now if now is not None else time.time()),
        "campaign": campaign,
        "outcome": "failed" if failed else "incomplete" if unfinished or not vms else "success",
        "started": _iso(min(starts)) if starts else None,
        "finished": _iso(max(ends)) if ends else None,
        "duration_seconds": _seconds(min(starts), max(ends), 1) if starts and ends else None,
        "storage_strategy": storage,
        "allocation_strategy": allocation,
        "stage_order": list(VM_STAGES),
        "rules_changed": fence,
        "rules_restored": unfence,
        "rules": _rules("fence", fence) + _rules("unfence", unfence),
        "campaign_stages": [_stage_row(s) for s in camp],
        "campaign_errors": camp_errors,
        "totals": {
            "vms": len(vms),
            "done": len(moved),
            "failed": len(failed),
            "pending": len(unfinished),
            "still_down": sum(1 for v in vms if v["still_down"]),
            "disks": sum(len(v["disks"]) for v in vms),
            "disk_size_bytes": sum(d["size"] or 0 for v in vms for d in v["disks"]),
            "disk_allocated_bytes": sum(d["allocated"] or 0 for v in vms for d in v["disks"]),
            "bytes_moved": bytes_moved,
            "transfer_seconds": round(transfer_seconds, 3),
            "rate_mib_s": round(bytes_moved / transfer_seconds / 2**20, 1)
            if transfer_seconds > 0 else None,
            "downtime_seconds": round(sum(down), 1),
            "downtime_max_seconds": max(down) if down else None,
            "backups_pending": sum(len(v["backups_pending"]) for v in vms),
        },
        "hosts": host_rows,
        "hosts_emptied": [h["name"] for h in host_rows if h["emptied"]],
        "waves": _waves(journal.get("evacuation")),
        "hosts_rejoined": list((journal.get("evacuation") or {}).get("joined") or []),
        "backups_pending": [{"vm": v["label"], "host": v["source_host"], "path": b}
                            for v in vms for b in v["backups_pending"]],
        "failures": [{"vm": v["label"], "name": v["name"], "uuid": v["uuid"],
                      "stage": v["failed_stage"],
                      "error": v["errors"][-1]["error"] if v["errors"] else v["error"],
                      "safe_point": v["safe_point"],
                      "source_host": v["source_host"], "target_host": v["target_host"]}
                     for v in failed],
        "vms": vms,
    }
    result: dict[str, Any] = redact(report, secrets)
    return result
