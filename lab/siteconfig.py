"""The site config the lab writes for rehost (see :mod:`rehost.core.config` for its keys)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rehost.lab.lab import LabState


def _s(value: str) -> str:
    # a TOML basic string: JSON's escapes are valid TOML
    return json.dumps(value)


def render_site_config(st: LabState, storage: str | None = None,
                       allocation: str = "loadlevel", report_dir: str | None = None) -> str:
    data = st.data
    root = st.root
    shared = len({h["datastore_dir"] for h in data["hosts"]}) == 1 and len(data["hosts"]) > 1
    # the sparse-aware copy where each host has its own datastore, nothing to copy where
    # they share one
    storage = storage or ("shared" if shared else "tar")
    lines = [
        "# rehost site config written by `rehost lab up` for the rehearsal lab",
        f"# lab: {data['name']} ({root})",
        "",
        "[campaign]",
        f"name = {_s('lab-' + data['name'])}",
        f"state_dir = {_s(str(root / 'state'))}",
        f"report_dir = {_s(report_dir or str(root / 'reports'))}",
        'vms = "all"',
        "# the lab's guests have no OS: they never answer an ACPI shutdown",
        "power_off_timeout = 3",
        "# the lab's VMs are ours to power off",
        "downtime_accepted = true",
        "",
        "[ssh]",
        f"config = {_s(data['ssh_config'])}",
        "",
    ]
    if data.get("control", "abiquo") != "abiquo":
        lines += ["[control]", f"strategy = {_s(data['control'])}", ""]
    emu = data.get("emulator")
    if emu:
        lines += [
            "[abiquo]",
            f"url = {_s(emu['url'])}",
            f"user = {_s(emu['user'])}",
            f"password_file = {_s(emu['password_file'])}",
            f"version = {_s(emu.get('version', '2.6'))}",
            f"verify_tls = {'true' if emu.get('verify_tls', True) else 'false'}",
            "",
        ]
    for h in data["hosts"]:
        role = "source" if h["os"].startswith("centos-5") else "target"
        lines += [
            f"[hosts.{_s(h['name'])}]",
            f"address = {_s(h['address'])}",
            f"uri = {_s(h['uri'])}",
            f"role = {_s(role)}",
            f"datastore = {_s(h['datastore'])}",
            *([f"rack = {_s(h['rack'])}"] if h.get("rack") else []),
            "",
        ]
    lines += [
        "[storage]",
        f"strategy = {_s(storage)}",
        "",
        "[allocation]",
        f"strategy = {_s(allocation)}",
        "",
    ]
    lines += _mail(data)
    return "\n".join(lines)


#: who owns the VMs of a lab without Abiquo (there, no enterprise says it)
LIBVIRT_OWNERS = "owners@rehost-lab.invalid"


def _mail(data: dict[str, Any]) -> list[str]:
    """The mail notifier, pointed at the lab's SMTP server: STARTTLS verified against the
    lab's CA, a login, owners from the emulator's enterprises (or one address for every VM
    on plain libvirt)."""
    mail = data.get("mail")
    if not mail:
        return []
    lines = [
        "[plugins.mail]",
        f"host = {_s(mail['host'])}",
        f"port = {int(mail['port'])}",
        'tls = "starttls"',
        f"ca_file = {_s(mail['ca_file'])}",
        f"user = {_s(mail['user'])}",
        f"password_file = {_s(mail['password_file'])}",
        'sender = "rehost@rehost-lab.invalid"',
        'sender_name = "rehost lab"',
        'contact = "the lab\'s operators, ops@rehost-lab.invalid"',
    ]
    if data.get("control", "abiquo") != "abiquo":
        lines.append(f"vm_owners = {{ \"*\" = [{_s(LIBVIRT_OWNERS)}] }}")
    return [*lines, ""]


def write_site_config(st: LabState, **kwargs: str) -> str:
    text = render_site_config(st, **kwargs)
    st.site_config.write_text(text)
    return text
