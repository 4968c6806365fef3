"""The mail notifier without the lab: its templates, its messages (no header injection through
a VM's name), its settings, the owners it finds in an in-process Abiquo emulator (2.4 XML and
2.6 JSON), and whole campaigns in-process (inline plugins perform the stages) against a real
SMTP server in a thread: one mail per owner per event, none twice across a resume, and a
server that is down or refuses mail stops no VM."""

from __future__ import annotations

import asyncio
import email
import email.policy
import http.server
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from loguru import logger
from pydantic import ValidationError

from rehost.abiquo.client import AbiquoClient
from rehost.abiquo.settings import AbiquoSettings
from rehost.core.campaign import Campaign
from rehost.core.config import parse_config
from rehost.core.journal import Journal
from rehost.core.model import VM, VM_STAGES, StrategyRecord
from rehost.core.pipeline import run_campaign
from rehost.core.plugins import build_plugin_manager
from rehost.core.strategies import KINDS
from rehost.hooks import hookimpl
from rehost.lab.lab import LabState
from rehost.plugins.mail.message import TemplateProblem, Templates, build, context
from rehost.plugins.mail.owners import Owner, Owners
from rehost.plugins.mail.settings import MailSettings, _secrets, valid_address
from rehost.reports.model import build_report

NASTY = 'web "01" <prod>\r\nBcc: victim@evil.example'


# -- templates and messages ----------------------------------------------------------------------


def settings(**kw: Any) -> MailSettings:
    base: dict[str, Any] = {"host": "127.0.0.1", "tls": "none", "sender": "noc@example.com"}
    return MailSettings.model_validate({**base, **kw})


def vm_info(label: str = NASTY) -> dict[str, Any]:
    return {"name": "ABQ_1", "label": label, "uuid": "u-1", "source_host": "old",
            "target_host": "new"}


@pytest.mark.parametrize("event", ["announced", "downtime_start", "downtime_end", "failed"])
def test_each_builtin_template_renders_with_every_value_on_one_line(event: str) -> None:
    s = settings(window="Saturday 22:00-02:00 UTC", contact="noc@example.com")
    owner = Owner("alice@example.com", 'Alice "Al" <Admin>\nX-Evil: 1', "alice", "Acme")
    subject, body = Templates().render(event, context(
        s, "camp", event, vm_info(), owner, via="start", stage="transfer",
        error="boom\nline", safe_point="the disks are kept"))
    flat = NASTY.replace("\r", " ").replace("\n", " ")
    assert "\n" not in subject and "\r" not in subject
    assert flat in subject
    assert flat in body  # the VM's name, as one line
    assert "X-Evil: 1" in body and "\nX-Evil" not in body
    assert "Acme" in body and "noc@example.com" in body
    if event == "announced":
        assert "Saturday 22:00-02:00 UTC" in subject
    if event == "failed":
        assert '"transfer"' in body and "the disks are kept" in body


def test_downtime_end_after_a_rollback_says_the_move_was_undone() -> None:
    s = settings()
    owner = Owner("alice@example.com")
    _, moved = Templates().render("downtime_end", context(s, "c", "downtime_end", vm_info("a"),
                                                          owner, via="start"))
    _, back = Templates().render("downtime_end", context(s, "c", "downtime_end", vm_info("a"),
                                                         owner, via="rollback"))
    assert "new host" in moved and "undone" not in moved
    assert "undone" in back


def test_a_site_template_replaces_or_extends_a_builtin_one(tmp_path: Path) -> None:
    (tmp_path / "announced.txt.j2").write_text(
        "Subject: {{ vars.site }}: {{ vm.label }} moves\n\nOur own text for {{ owner.email }}.\n")
    (tmp_path / "downtime_start.txt.j2").write_text(
        '{% extends "builtin/downtime_start.txt.j2" %}\n'
        "{% block signature %}The {{ vars.site }} team{% endblock %}\n")
    s = settings(templates=str(tmp_path), vars={"site": "Example Cloud"})
    t = Templates(s.templates)
    owner = Owner("alice@example.com")
    subject, body = t.render("announced", context(s, "c", "announced", vm_info("web"), owner))
    assert (subject, body) == ("Example Cloud: web moves", "Our own text for "
                               "alice@example.com.\n")
    subject, body = t.render("downtime_start", context(s, "c", "downtime_start",
                                                        vm_info("web"), owner))
    assert subject == "web is going down for its move"  # the built-in subject
    assert body.rstrip().endswith("The Example Cloud team")
    assert "Sent by rehost" not in body


@pytest.mark.parametrize(("text", "says"), [
    ("Hello {{ vm.label }}\n", "first line must be 'Subject: ...'"),
    ("Subject: {{ vm.nosuch }}\n\nx\n", "nosuch"),
    ("Subject: {% if %}\n", "template announced.txt.j2"),
    ("Subject:   \n\nbody\n", "the subject is empty"),
])
def test_a_template_that_renders_no_mail_is_a_problem(tmp_path: Path, text: str,
                                                       says: str) -> None:
    (tmp_path / "announced.txt.j2").write_text(text)
    t = Templates(str(tmp_path))
    with pytest.raises(TemplateProblem, match=says.replace("(", r"\(").replace(".", r"\.")):
        t.render("announced", context(settings(), "c", "announced", vm_info("a"),
                                      Owner("a@example.com")))


def test_no_header_can_be_injected_through_a_name() -> None:
    s = settings(sender_name='rehost "NOC" <ops>', reply_to="noc@example.com")
    owner = Owner("alice@example.com", 'Alice "Al" <a@evil.example>, b@evil.example')
    msg = build(s, owner, f"{NASTY} is going down", "body\n", event="downtime_start",
                vm_uuid="u-1")
    raw = msg.as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Bcc"] is None and parsed["X-Evil"] is None
    assert b"\r\nBcc:" not in raw
    assert [a.addr_spec for a in parsed["To"].addresses] == ["alice@example.com"]
    assert parsed["To"].addresses[0].display_name == 'Alice "Al" <a@evil.example>, ' \
                                                    'b@evil.example'
    assert [a.addr_spec for a in parsed["From"].addresses] == ["noc@example.com"]
    assert parsed["Subject"] == NASTY.replace("\r", " ").replace("\n", " ") + " is going down"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["X-Rehost-Event"] == "downtime_start"


# -- settings ------------------------------------------------------------------------------------


def test_without_a_host_no_mail_is_sent() -> None:
    assert not MailSettings().active
    assert not settings(enabled=False).active
    assert settings().active and settings().port_number == 25
    assert settings(tls="ssl", user="u", password_env="P").port_number == 465


@pytest.mark.parametrize(("table", "says"), [
    ({"password": "x"}, "put the password in a file"),
    ({"user": "u"}, "user needs password_file or password_env"),
    ({"password_env": "P"}, "a password needs its user"),
    ({"user": "u", "password_env": "P"}, "a login needs tls"),
    ({"sender": None}, "set sender"),
    ({"sender": "noc@example.com\r\nBcc: x@y"}, "not an e-mail address"),
    ({"extra": ["not an address"]}, "not an e-mail address"),
    ({"vm_owners": {"web": ["a@b", "<x@y>"]}}, "vm_owners.web"),
    ({"events": ["announced", "gone"]}, "events"),
    ({"tls": "yes"}, "tls"),
    ({"timeout": 0}, "timeout"),
    ({"sender_name": "a\nb"}, "one line"),
    ({"to": ["a@b"]}, "to"),
])
def test_bad_settings_are_refused(table: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        MailSettings.model_validate({"host": "smtp.example.com", "tls": "none",
                                     "sender": "noc@example.com", **table})


def test_paths_are_relative_to_the_config_and_the_password_is_a_secret(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret-smtp\n")
    s = MailSettings.model_validate(
        {"host": "smtp.example.com", "sender": "noc@example.com", "user": "rehost",
         "password_file": "pw", "ca_file": "ca.pem", "templates": "mail"},
        context={"base_dir": tmp_path})
    assert s.password_file == str(tmp_path / "pw")
    assert s.ca_file == str(tmp_path / "ca.pem") and s.templates == str(tmp_path / "mail")
    assert s.password() == "s3cret-smtp"
    assert _secrets(s) == ["s3cret-smtp"]
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize(("value", "ok"), [
    ("a@example.com", True), ("first.last+tag@sub.example.co", True), ("root@localhost", True),
    ("a b@example.com", False), ("a@example.com\n", False), ('"a"@example.com', False),
    ("a@-example.com", False), ("a..b@example.com", False), ("@example.com", False),
    ("a@example.com>", False), ("", False),
])
def test_only_plain_addresses_are_mailed(value: str, ok: bool) -> None:
    assert valid_address(value) is ok


# -- owners from Abiquo (an in-process emulator) -------------------------------------------------

ENTERPRISES = [
    {"name": "acme", "users": [
        {"nick": "alice", "name": "Alice", "surname": "Martin", "email": "alice@acme.example"},
        {"nick": "bob", "name": "Bob", "email": "Bob@Acme.example"},
        {"nick": "carl", "name": "Carl", "email": "carl@acme.example", "active": False},
        {"nick": "dana", "name": "Dana", "email": "dana@acme.example", "vdcs": [2]},
        {"nick": "eve", "name": "Eve", "email": "eve at acme"},
    ]},
    {"name": "globex", "users": [{"nick": "gus", "name": "Gus", "email": "gus@globex.example"}]},
]


@pytest.fixture(params=["2.4", "2.6"])
def emulator(request: pytest.FixtureRequest) -> Iterator[str]:
    """The emulator's API in-process (its monitor not started; the VMs on no machine), with
    two enterprises; its URL."""
    from rehost.lab.emulator.server import EmulatorServer, serve_in_thread
    from rehost.lab.emulator.service import Emulator

    hosts = [{"name": "c5-a", "address": "198.18.9.11", "cpus": 4, "ram_mib": 4096,
              "datastore": "/var/lib/virt"}]
    vms = [{"name": n, "uuid": f"u-{n}", "cpu": 1, "ram_mib": 64, "disks": [], "volume": None,
            "enterprise": e, "owner": o}
           for n, e, o in [("web", "acme", "bob"), ("erp", "globex", None)]]
    lab = LabState({"hosts": hosts, "vms": vms, "enterprises": ENTERPRISES,
                    "abiquo": request.param})
    emu = Emulator(lab, profile=request.param)
    server = EmulatorServer(emu, "admin", "pw")
    serve_in_thread(server)
    yield f"{server.base_url}|{request.param}"
    server.shutdown()
    server.server_close()
    emu.stop()


class AbiquoCtx:
    """What the owner lookup reads of a campaign whose control plane is Abiquo."""

    def __init__(self, url: str, version: str) -> None:
        self.config = SimpleNamespace(control=SimpleNamespace(strategy="abiquo"),
                                      campaign=SimpleNamespace(task_timeout=30, name="t"))
        self.abiquo = AbiquoSettings.model_validate(
            {"url": url, "user": "admin", "password_env": "REHOST_TEST_MAIL_ABQ",
             "version": version})

    def settings(self, name: str) -> Any:
        return self.abiquo if name == "abiquo" else None


def abiquo_vm(url: str, n: int, name: str) -> VM:
    return VM(name=f"ABQ_u-{name}", uuid=f"u-{name}", label=name,
              control_ref=f"{url}/cloud/virtualdatacenters/1/virtualappliances/1/"
                          f"virtualmachines/{n}")


def test_owners_are_the_users_of_the_vms_enterprise(emulator: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHOST_TEST_MAIL_ABQ", "pw")
    url, version = emulator.split("|")
    ctx: Any = AbiquoCtx(url, version)
    owners = Owners(settings())
    web = owners.of(abiquo_vm(url, 1, "web"), ctx)
    # carl is not active, dana may not see the VM's virtual datacenter, eve has no address
    assert [(o.email, o.name, o.enterprise) for o in web] == [
        ("alice@acme.example", "Alice Martin", "acme"), ("Bob@Acme.example", "Bob", "acme")]
    assert owners.left_out["ABQ_u-web"] == [
        "carl (not active)", "dana (restricted to other virtual datacenters)",
        "eve (no valid e-mail address)"]
    # found by its uuid when the campaign did not keep its address
    erp = owners.of(VM(name="ABQ_u-erp", uuid="u-erp", label="erp"), ctx)
    assert [(o.email, o.enterprise) for o in erp] == [("gus@globex.example", "globex")]


def test_owners_user_is_the_vms_own_user_only(emulator: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHOST_TEST_MAIL_ABQ", "pw")
    url, version = emulator.split("|")
    ctx: Any = AbiquoCtx(url, version)
    web = Owners(settings(owners="user")).of(abiquo_vm(url, 1, "web"), ctx)
    assert [(o.email, o.nick, o.enterprise) for o in web] == [
        ("Bob@Acme.example", "bob", "acme")]


def test_the_site_config_names_owners_instead_of_abiquo(emulator: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHOST_TEST_MAIL_ABQ", "pw")
    url, version = emulator.split("|")
    ctx: Any = AbiquoCtx(url, version)
    web = abiquo_vm(url, 1, "web")
    s = settings(vm_owners={"we*": ["team@example.com"], "*": ["all@example.com"]},
                 extra=["noc@example.com", "TEAM@example.com"])
    assert [o.email for o in Owners(s).of(web, ctx)] == ["team@example.com",
                                                         "noc@example.com"]
    s = settings(owners="none", extra=["noc@example.com"])
    assert [o.email for o in Owners(s).of(web, ctx)] == ["noc@example.com"]
    s = settings(override=["me@example.com"], extra=["noc@example.com"])
    assert [o.email for o in Owners(s).of(web, ctx)] == ["me@example.com", "noc@example.com"]


def test_the_users_list_keeps_no_password(emulator: str) -> None:
    url, version = emulator.split("|")
    with AbiquoClient(url, "admin", "pw", version=version) as c:
        avm = c.vm(f"{url}/cloud/virtualdatacenters/1/virtualappliances/1/virtualmachines/1")
        ent = c.vm_enterprise(avm)
        assert ent is not None and ent.name == "acme"
        users = c.enterprise_users(ent)
        assert [u.nick for u in users] == ["alice", "bob", "carl", "dana", "eve"]
        assert all("password" not in u.raw for u in users)
        assert users[3].availableVirtualDatacenters == "2" and not users[3].sees_vdc(1)
        assert users[2].is_active is False and users[0].is_active is True
        owner = c.vm_user(avm)
        assert owner is not None and owner.nick == "bob" and "password" not in owner.raw


def test_a_server_that_ignores_the_page_asked_for_gives_each_user_once() -> None:
    """Abiquo 2.0 pages users by ``numResults`` and builds ``next`` links with ``startwith``,
    which it then ignores: the same page comes back. Each user is kept once, and the client
    stops."""
    asked: list[str] = []

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:  # http.server's naming
            asked.append(self.path)
            body = {"links": [{"rel": "next", "href": "/api/admin/enterprises/1/users"
                                                      "?startwith=2"}],
                    "collection": [{"id": 1, "nick": "a", "email": "a@x.example"},
                                   {"id": 2, "nick": "b", "email": "b@x.example"}],
                    "totalSize": 4}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.abiquo.users+json; version=2.6")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api"
        from rehost.abiquo.types import Enterprise, Link

        ent = Enterprise(links=[Link("users", f"{url}/admin/enterprises/1/users")], id=1)
        with AbiquoClient(url, "admin", "pw", version="2.6", retries=1) as c:
            users = c.enterprise_users(ent)
    finally:
        server.shutdown()
        server.server_close()
    assert [u.nick for u in users] == ["a", "b"]
    assert len(asked) == 2 and "numResults=1000" in asked[0]


# -- a real SMTP server in a thread --------------------------------------------------------------


@dataclass
class Inbox:
    """aiosmtpd's handler: keeps what it receives; refuses while ``refuse`` is set."""

    mails: list[dict[str, Any]] = field(default_factory=list)
    refuse: str | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return self.refuse
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.mails.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                           "raw": raw, "msg": msg, "tls": session.ssl is not None,
                           "login": session.auth_data})
        return "250 2.0.0 OK"

    def events(self) -> list[tuple[str, str, str]]:
        """(recipient, event, VM uuid) of each mail."""
        return [(m["to"][0], m["msg"]["X-Rehost-Event"], m["msg"]["X-Rehost-VM"])
                for m in self.mails]


@contextmanager
def smtp_server(inbox: Inbox, *, tls: ssl.SSLContext | None = None,
                password: str | None = None) -> Iterator[int]:
    """An SMTP server on 127.0.0.1 in a thread (STARTTLS and a login ``rehost`` when given);
    its port."""
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"rehost", (password or "").encode())
        return AuthResult(success=ok, auth_data="rehost" if ok else None, handled=False)

    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            holder["server"] = await loop.create_server(
                lambda: SMTP(inbox, hostname="test", tls_context=tls,
                             require_starttls=tls is not None, authenticator=auth,
                             auth_required=password is not None),
                "127.0.0.1", 0)
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield int(holder["server"].sockets[0].getsockname()[1])
    finally:
        loop.call_soon_threadsafe(holder["server"].close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- whole campaigns in-process -------------------------------------------------------------------


SITE = """
[campaign]
name = "mail-test"
state_dir = "state"
report_dir = "reports"

[hosts.old]
address = "198.18.250.10"
role = "source"

[hosts.new]
address = "198.18.250.11"
role = "target"

[control]
strategy = "test-control"

[storage]
strategy = "test-storage"

[allocation]
strategy = "test-fence"

[report]
formats = []
"""

RESULTS: dict[str, dict[str, Any]] = {
    "locate": {"host": "old"}, "backup_xml": {"xml": "domain.xml", "disks": 0},
    "backup_disks": {"strategy": "test"}, "precopy": {"strategy": "test"},
    "power_off": {"how": "graceful"}, "undefine": {"undefined": True},
    "await_undeployed": {}, "preserve_disks": {"disks": []}, "deploy": {"host": "new"},
    "power_off_new": {}, "transfer": {"disks": []}, "remove_new_disks": {},
    "swap_disks": {"disks": []}, "start": {"host": "new"},
    "verify": {"ok": True, "host": "new", "method": "test", "disks": []},
    "cleanup": {"host": "old"}, "rollback": {"host": "old"},
}


class Crash(BaseException):
    """The process dying in the middle of a stage."""


def _unused(kind: str) -> type:
    base = KINDS[kind]
    return type(f"Unused{kind.title()}", (base,),
                {m: lambda self, *a, **k: None for m in base.__abstractmethods__})


class Mover:
    """Selects the VMs (labels as given) and performs every stage; fails where told to."""

    def __init__(self, labels: list[str], fail: dict[tuple[str, str], BaseException] | None
                 = None) -> None:
        self.labels = labels
        self.fail = dict(fail or {})

    def do(self, stage: str, vm: VM) -> dict[str, Any]:
        error = self.fail.get((vm.label, stage))
        if error is not None:
            raise error
        if stage == "locate":
            vm.source_host = "old"
        if stage == "deploy":
            vm.target_host = "new"
        if stage == "rollback":
            vm.target_host = None
        return dict(RESULTS[stage])

    @hookimpl
    def rehost_control_planes(self) -> list[StrategyRecord]:
        return [StrategyRecord("control", "test-control", "test", _unused("control"))]

    @hookimpl
    def rehost_storage_strategies(self) -> list[StrategyRecord]:
        return [StrategyRecord("storage", "test-storage", "test", _unused("storage"))]

    @hookimpl
    def rehost_allocation_strategies(self) -> list[StrategyRecord]:
        return [StrategyRecord("allocation", "test-fence", "test", _unused("allocation"))]

    @hookimpl
    def rehost_select_vms(self, ctx: Campaign) -> list[VM]:
        known = [VM.from_dict(r["vm"]) for r in ctx.journal.vm_rows()]
        names = {v.label for v in known}
        return known + [VM(name=f"ABQ_{i}", uuid=f"u-{i}", label=label)
                        for i, label in enumerate(self.labels) if label not in names]

    @hookimpl
    def rehost_fence(self, ctx: Campaign) -> dict[str, Any]:
        return {}

    @hookimpl
    def rehost_unfence(self, ctx: Campaign, fenced: Any) -> dict[str, Any]:
        return {}

    @hookimpl
    def rehost_rollback_vm(self, vm: VM, ctx: Campaign) -> dict[str, Any]:
        return self.do("rollback", vm)


def _stage_impl(stage: str) -> Any:
    def impl(self: Mover, vm: VM, ctx: Campaign) -> dict[str, Any]:
        return self.do(stage, vm)

    impl.__name__ = f"rehost_vm_{stage}"
    return hookimpl(impl)


for _stage in VM_STAGES:
    if _stage != "notify":  # the notify built-in performs it
        setattr(Mover, f"rehost_vm_{_stage}", _stage_impl(_stage))


def mail_table(port: int, **keys: str) -> str:
    """A ``[plugins.mail]`` table for the test's server (values as TOML text)."""
    values = {"host": '"127.0.0.1"', "port": str(port), "tls": '"none"',
              "sender": '"noc@example.com"', "timeout": "5",
              "vm_owners": '{ "web*" = ["alice@example.com", "bob@example.com"], '
                           '"*" = ["carol@example.com"] }', **keys}
    return "[plugins.mail]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())


@contextmanager
def campaign(tmp_path: Path, mover: Mover, mail: str,
             **campaign_keys: Any) -> Iterator[Campaign]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "site.toml"
    path.write_text(SITE + mail)
    cfg = parse_config(path.read_text(), str(path))
    manager = build_plugin_manager(builtins=["notify", "mail"], entry_points=False,
                                   extra=[(mover, "mover")])
    ctx = Campaign(cfg, manager)
    for k, v in campaign_keys.items():
        setattr(ctx.config.campaign, k, v)
    try:
        yield ctx
    finally:
        ctx.close()


def mail_errors(tmp_path: Path) -> list[str]:
    j = Journal(tmp_path / "state")
    try:
        report = build_report(j, campaign="c", storage="s", allocation="a")
    finally:
        j.close()
    return [e["error"] for e in report["campaign_errors"] if e["stage"] == "mail"]


def test_each_owner_gets_one_mail_per_event_and_none_twice_across_resume(
        tmp_path: Path) -> None:
    inbox = Inbox()
    boom = RuntimeError("injected: the copy link broke")
    with smtp_server(inbox) as port:
        with campaign(tmp_path, Mover(["web01", "db01"], fail={("db01", "transfer"): boom}),
                      mail_table(port)) as ctx:
            assert run_campaign(ctx) == {"ABQ_0": "done", "ABQ_1": "failed"}
        first = sorted(inbox.events())
        assert first == sorted([
            *((who, ev, "u-0") for who in ("alice@example.com", "bob@example.com")
              for ev in ("announced", "downtime_start", "downtime_end")),
            *(("carol@example.com", ev, "u-1")
              for ev in ("announced", "downtime_start", "failed"))])
        for m in inbox.mails:
            assert m["to"] == [m["msg"]["To"].addresses[0].addr_spec]  # one recipient each
            assert m["from"] == "noc@example.com"
        subjects = {(m["to"][0], m["msg"]["X-Rehost-Event"]): m["msg"]["Subject"]
                    for m in inbox.mails}
        assert subjects[("alice@example.com", "downtime_start")] == \
            "web01 is going down for its move"
        assert subjects[("carol@example.com", "failed")] == "db01: its move was stopped"

        # fixed; resume: db01 goes on at transfer, and only its "runs again" mail is new
        with campaign(tmp_path, Mover(["web01", "db01"]), mail_table(port)) as ctx:
            assert run_campaign(ctx) == {"ABQ_0": "done", "ABQ_1": "done"}
        assert sorted(inbox.events()) == sorted([*first, ("carol@example.com",
                                                          "downtime_end", "u-1")])
        # nothing left to do, nothing to tell
        with campaign(tmp_path, Mover(["web01", "db01"]), mail_table(port)) as ctx:
            run_campaign(ctx)
        assert len(inbox.mails) == len(first) + 1
    assert mail_errors(tmp_path) == []


def test_a_run_killed_after_the_down_mail_does_not_send_it_again(tmp_path: Path) -> None:
    inbox = Inbox()
    with smtp_server(inbox) as port:
        with campaign(tmp_path, Mover(["web01"], fail={("web01", "power_off"): Crash()}),
                      mail_table(port)) as ctx, pytest.raises(Crash):
            run_campaign(ctx)
        assert sorted(e for _, e, _ in inbox.events()) == ["announced", "announced",
                                                           "downtime_start", "downtime_start"]
        with campaign(tmp_path, Mover(["web01"]), mail_table(port)) as ctx:
            assert run_campaign(ctx) == {"ABQ_0": "done"}
    assert sorted(e for _, e, _ in inbox.events()) == sorted(
        ["announced", "downtime_start", "downtime_end"] * 2)


def test_a_vm_rolled_back_and_moved_again_is_told_again(tmp_path: Path) -> None:
    from rehost.core.errors import PreconditionError

    inbox = Inbox()
    stuck = PreconditionError("it does not start on new")
    with smtp_server(inbox) as port:
        mail = mail_table(port, vm_owners='{ "*" = ["carol@example.com"] }')
        with campaign(tmp_path, Mover(["app"], fail={("app", "start"): stuck}), mail,
                      auto_rollback=True) as ctx:
            assert run_campaign(ctx) == {"ABQ_0": "rolled_back"}
        events = [e for _, e, _ in inbox.events()]
        assert events == ["announced", "downtime_start", "failed", "downtime_end"]
        back = inbox.mails[-1]["msg"].get_body().get_content()
        assert "undone" in back
        with campaign(tmp_path, Mover(["app"]), mail) as ctx:
            assert run_campaign(ctx, ["app"]) == {"ABQ_0": "done"}
    assert [e for _, e, _ in inbox.events()][4:] == ["announced", "downtime_start",
                                                      "downtime_end"]


def test_a_dead_smtp_server_stops_no_vm_and_is_reported(tmp_path: Path) -> None:
    records: list[str] = []
    logger.add(lambda m: records.append(str(m)), level="WARNING")
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    with campaign(tmp_path, Mover(["web01", "web02", "db01"]),
                  mail_table(port, retry_after="600")) as ctx:
        assert run_campaign(ctx) == {"ABQ_0": "done", "ABQ_1": "done", "ABQ_2": "done"}
    assert time.monotonic() - t0 < 30
    errors = mail_errors(tmp_path)
    assert errors, "the mail failures are in the report's campaign errors"
    assert any("web01: the announced mail to 2 owner(s) (alice@example.com, "
               "bob@example.com) was not sent: SMTP server 127.0.0.1:" in e for e in errors)
    assert any("db01: the downtime_end mail" in e and "the move goes on" in e for e in errors)
    assert any("was not sent" in r for r in records)


def test_a_server_that_refuses_mail_stops_no_vm_and_is_reported(tmp_path: Path) -> None:
    inbox = Inbox(refuse="554 5.7.1 no relaying for you")
    with smtp_server(inbox) as port, campaign(tmp_path, Mover(["web01"]),
                                              mail_table(port)) as ctx:
        assert run_campaign(ctx) == {"ABQ_0": "done"}
    errors = mail_errors(tmp_path)
    assert len(errors) == 3  # announced, downtime_start, downtime_end: one note each
    assert all("the server answered 554 5.7.1 no relaying for you" in e for e in errors)
    assert inbox.mails == []


def test_the_preflight_warns_of_what_would_keep_owners_uninformed(tmp_path: Path) -> None:
    from rehost.core.pipeline import plan

    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "failed.txt.j2").write_text("no subject line\n")
    mail = mail_table(free_port(), vm_owners='{ "web*" = ["alice@example.com"] }',
                      templates='"mail"')
    with campaign(tmp_path, Mover(["web01", "db01"]), mail) as ctx:
        findings = plan(ctx).findings
    found = {(f.code, f.vm) for f in findings}
    messages = " ".join(f.message for f in findings)
    assert ("mail-template", None) in found and "failed.txt.j2" in messages
    assert ("mail-server", None) in found
    assert ("mail-owners", "db01") in found and ("mail-owners", "web01") not in found


# -- TLS and the login ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from rehost.lab.mailserver import make_certificates

    return make_certificates(tmp_path_factory.mktemp("tls"), "127.0.0.1")


def test_mail_goes_over_verified_tls_with_a_login_and_the_password_shows_nowhere(
        tmp_path: Path, certificates: dict[str, str]) -> None:
    records: list[str] = []
    logger.add(lambda m: records.append(str(m)), level="DEBUG")
    password = "smtp-pa55word-for-the-test"
    for folder, text in ((tmp_path, password), (tmp_path / "b", password),
                         (tmp_path / "c", password), (tmp_path / "d", "wrong-password-123")):
        folder.mkdir(exist_ok=True)
        (folder / "smtp.pw").write_text(text + "\n")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certificates["cert"], certificates["key"])
    inbox = Inbox()
    with smtp_server(inbox, tls=server_tls, password=password) as port:
        mail = mail_table(port, tls='"starttls"', ca_file=json.dumps(certificates["ca_file"]),
                          user='"rehost"', password_file='"smtp.pw"')
        with campaign(tmp_path, Mover(["web01"]), mail) as ctx:
            assert password in ctx.secrets()
            assert run_campaign(ctx) == {"ABQ_0": "done"}
        assert len(inbox.mails) == 6 and all(m["tls"] and m["login"] == "rehost"
                                             for m in inbox.mails)
        # without the lab's CA the certificate is not trusted: no mail, the VM still moves
        untrusted = mail_table(port, tls='"starttls"', user='"rehost"',
                               password_file='"smtp.pw"')
        with campaign(tmp_path / "b", Mover(["web01"]), untrusted) as ctx:
            assert run_campaign(ctx) == {"ABQ_0": "done"}
        assert len(inbox.mails) == 6
        assert any("CERTIFICATE_VERIFY_FAILED" in e for e in mail_errors(tmp_path / "b"))
        # unless the site config says not to check it
        unchecked = untrusted + "verify_tls = false\n"
        with campaign(tmp_path / "c", Mover(["web01"]), unchecked) as ctx:
            assert run_campaign(ctx) == {"ABQ_0": "done"}
        assert len(inbox.mails) == 12
        # a wrong password: refused, reported, and still not shown
        with campaign(tmp_path / "d", Mover(["web01"]), mail) as ctx:
            assert run_campaign(ctx) == {"ABQ_0": "done"}
        assert any("535" in e for e in mail_errors(tmp_path / "d"))
    for folder in (tmp_path, tmp_path / "b", tmp_path / "c", tmp_path / "d"):
        for f in (folder / "state").rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert password.encode() not in data and b"wrong-password-123" not in data, f
    assert not [r for r in records if password in r or "wrong-password-123" in r]
