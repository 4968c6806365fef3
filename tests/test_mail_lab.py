"""The mail notifier in the rehearsal lab, through the real command line: the owners Abiquo
names (the users of each VM's enterprise, read from the emulator) get their mails from the
lab's own SMTP server (STARTTLS verified against the lab's CA, a login), one per owner per
event, none twice when the campaign is resumed; and a relay that refuses mail, or one that is
down, is reported while every VM still moves."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from rehost.lab.hosts import stop_pids
from rehost.lab.lab import LabState
from rehost.lab.mailserver import LabMail, read_mails, refuse
from rehost.reports.json_report import schema
from tests.campaign_helpers import rehost, two_host_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

WEB = 'web "01" <prod>'

MAIL_LAB = two_host_lab("mail", f"""
[[enterprises]]
name = "acme"
users = [
  {{ nick = "alice", name = "Alice", surname = "Martin", email = "alice@acme.example" }},
  {{ nick = "bob", name = "Bob", email = "bob@acme.example" }},
  {{ nick = "olga", name = "Olga", email = "olga@acme.example", active = false }},
]

[[enterprises]]
name = "globex"
users = [{{ nick = "gus", name = "Gus", email = "gus@globex.example" }}]

[[vms]]
name = {json.dumps(WEB)}
host = "c5-a"
enterprise = "acme"
disks = [{{ size_mib = 32, format = "raw", data_mib = 2 }}]

[[vms]]
name = "db01"
host = "c5-a"
enterprise = "globex"
disks = [{{ size_mib = 16, format = "raw", data_mib = 1 }}]
""")

OWNERS = {WEB: ["alice@acme.example", "bob@acme.example"], "db01": ["gus@globex.example"]}
SUBJECTS = {"announced": "{} will be moved to a new host",
            "downtime_start": "{} is going down for its move",
            "downtime_end": "{} runs again"}


def by_event(mails: list[LabMail]) -> list[tuple[str, str, str]]:
    """(recipient, event, VM uuid) of each mail, sorted."""
    return sorted((m.rcpt_tos[0], str(m.message["X-Rehost-Event"]),
                   str(m.message["X-Rehost-VM"])) for m in mails)


def report(st: LabState) -> dict[str, object]:
    """The JSON report, checked against its schema (mail errors are campaign errors)."""
    data: dict[str, object] = json.loads((st.root / "reports" / "report.json").read_text())
    jsonschema.Draft202012Validator(schema(),
                                    format_checker=jsonschema.FormatChecker()).validate(data)
    return data


def statuses(st: LabState) -> dict[str, str]:
    rows = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)["vms"]
    return {r["label"]: r["status"] for r in rows}


def test_each_owner_gets_the_announced_down_and_up_mails_once(make_lab) -> None:  # type: ignore[no-untyped-def]
    st: LabState = make_lab(MAIL_LAB)
    uuids = {v["name"]: v["uuid"] for v in st.data["vms"]}
    res = rehost("run", "-c", str(st.site_config), "--parallel", "2")
    assert res.returncode == 0, res.stdout + res.stderr

    mails = read_mails(st)
    expected = sorted((who, event, uuids[vm]) for vm, owners in OWNERS.items()
                      for who in owners for event in SUBJECTS)
    assert by_event(mails) == expected  # olga is not active: never mailed
    for m in mails:
        vm = next(v for v, u in uuids.items() if u == m.message["X-Rehost-VM"])
        event = str(m.message["X-Rehost-Event"])
        assert m.rcpt_tos == m.to and len(m.rcpt_tos) == 1  # one owner a mail
        assert m.mail_from == "rehost@rehost-lab.invalid"
        assert m.tls and m.login == "rehost"  # STARTTLS checked against the lab's CA
        assert m.subject.startswith(SUBJECTS[event].format(vm)), m.subject
        assert vm in m.body
        assert ("acme" if vm == WEB else "globex") in m.body
        assert m.message["Bcc"] is None and m.message["Cc"] is None
    alice = [m for m in mails if m.rcpt_tos == ["alice@acme.example"]]
    assert all(m.message["To"].addresses[0].display_name == "Alice Martin" for m in alice)
    assert "Hello Alice Martin," in alice[0].body

    # nothing is left to move: a resume, and a run, tell nobody anything again
    assert rehost("resume", "-c", str(st.site_config)).returncode == 0
    assert rehost("run", "-c", str(st.site_config)).returncode == 0
    assert len(read_mails(st)) == len(mails)
    data = report(st)
    assert [e for e in data["campaign_errors"] if e["stage"] == "mail"] == []  # type: ignore[union-attr,index]
    # the SMTP password is in no report, journal or log
    password = Path(st.data["mail"]["password_file"]).read_text().strip()
    for folder in (st.root / "reports", st.root / "state"):
        for f in folder.rglob("*"):
            if f.is_file():
                assert password.encode() not in f.read_bytes(), f


def test_a_relay_that_refuses_or_is_down_is_reported_and_every_vm_moves(make_lab) -> None:  # type: ignore[no-untyped-def]
    st: LabState = make_lab(MAIL_LAB)
    refuse(st)  # the relay answers 554 to every message
    res = rehost("run", "-c", str(st.site_config), "--vm", "db01")
    assert res.returncode == 0, res.stdout + res.stderr
    assert statuses(st)["db01"] == "done"
    assert read_mails(st) == []
    errors = [e["error"] for e in report(st)["campaign_errors"]  # type: ignore[union-attr]
              if e["stage"] == "mail"]
    assert len(errors) == 3, errors  # announced, downtime_start, downtime_end
    assert all(e.startswith("db01: the ") and "gus@globex.example" in e and "554" in e
               and e.endswith("the move goes on") for e in errors)

    # the relay is gone altogether: the preflight warns, the VM moves all the same
    refuse(st, on=False)
    stop_pids([int(st.data["mail"]["pid"])])
    plan = rehost("plan", "-c", str(st.site_config), "--json")
    findings = json.loads(plan.stdout)["findings"]
    assert any(f["code"] == "mail-server" and f["severity"] == "warning" for f in findings)
    res = rehost("run", "-c", str(st.site_config), "--vm", WEB)
    assert res.returncode == 0, res.stdout + res.stderr
    assert statuses(st) == {"db01": "done", WEB: "done"}
    errors = [e["error"] for e in report(st)["campaign_errors"]  # type: ignore[union-attr]
              if e["stage"] == "mail"]
    down = [e for e in errors if e.startswith(f"{WEB}: ")]
    assert len(down) == 3 and all("alice@acme.example, bob@acme.example" in e
                                  and "Connection refused" in e for e in down), down
    md = (st.root / "reports" / "report.md").read_text()
    assert "Campaign errors" in md and "the move goes on" in md
