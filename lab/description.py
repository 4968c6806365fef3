"""The lab description (TOML): hosts, their personalities, the datastore, the VMs to create,
and the enterprises (tenants) whose users own the VMs in the Abiquo emulator."""

from __future__ import annotations

import hashlib
import os
import tomllib
import uuid as uuidlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rehost.core.errors import ConfigError
from rehost.lab.hosts import default_network

#: What each personality shows in /etc/redhat-release.
PERSONALITIES: dict[str, str] = {
    "centos-5.11": "CentOS release 5.11 (Final)",
    "centos-5.8": "CentOS release 5.8 (Final)",
    "centos-6.3": "CentOS release 6.3 (Final)",
    "centos-6.4": "CentOS release 6.4 (Final)",
    "centos-6.5": "CentOS release 6.5 (Final)",
}


@dataclass
class LabDisk:
    size_mib: int = 64
    format: str = "raw"  # raw (sparse) or qcow2
    data_mib: int = 2  # how much of it holds the disk's own content
    #: ``local``: on the host's own datastore (see :attr:`LabVM.datastore`); "" the VM's
    datastore: str = ""


@dataclass
class LabVM:
    name: str
    host: str
    uuid: str
    cpu: int = 1
    ram_mib: int = 32
    disks: list[LabDisk] = field(default_factory=list)
    volume: bool = False
    running: bool = True
    #: the domain's name: Abiquo names it ABQ_<uuid>; on plain libvirt it is the VM's name
    abiquo: bool = True
    #: captured (imported) into Abiquo: its domain keeps its own name (the VM's name)
    captured: bool = False
    #: defined and never started: the emulator shows it CONFIGURED
    configured: bool = False
    #: the enterprise that owns it in the emulator (None: the first), and its user's nick
    #: (None: the enterprise's first user)
    enterprise: str | None = None
    owner: str | None = None
    #: ``local``: its disks are on the host's own local datastore (``[lab] local_datastore``),
    #: which no other host sees, even in a lab whose datastore is shared
    datastore: str = ""

    @property
    def domain(self) -> str:
        return f"ABQ_{self.uuid}" if self.abiquo and not self.captured else self.name


@dataclass
class LabUser:
    nick: str
    name: str = ""
    surname: str = ""
    email: str = ""
    active: bool = True
    #: the virtual datacenters the user is restricted to (empty: all)
    vdcs: list[int] = field(default_factory=list)


@dataclass
class LabEnterprise:
    name: str
    users: list[LabUser] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name,
                "users": [{"nick": u.nick, "name": u.name or u.nick, "surname": u.surname,
                           "email": u.email, "active": u.active, "vdcs": list(u.vdcs)}
                          for u in self.users]}


@dataclass
class LabHost:
    name: str
    os: str
    cpus: int = 4
    ram_mib: int = 8192
    rack: str = ""  # the rack the site config says it stands in ("" none)


@dataclass
class LabDescription:
    name: str
    network: str
    datastore: str
    shared_datastore: bool
    volume_mib: int
    hosts: list[LabHost]
    vms: list[LabVM]
    source: str = ""
    #: ``abiquo`` (the API emulator runs) or ``libvirt`` (plain libvirt hosts, no emulator)
    control: str = "abiquo"
    #: the Abiquo version the emulator plays: ``2.4`` (XML only, 2.0's field names) or ``2.6``
    abiquo: str = "2.6"
    #: the enterprises of the emulator (none: one enterprise ``lab``, its user ``admin``)
    enterprises: list[LabEnterprise] = field(default_factory=list)
    #: whether the lab runs its SMTP server (the site config's mail notifier sends there)
    mail: bool = True
    #: each host's second datastore, its own (mounted only when a VM has ``datastore =
    #: "local"``)
    local_datastore: str = "/var/lib/virt-local"

    @property
    def uses_local_datastore(self) -> bool:
        return any(v.datastore == "local" or any(d.datastore == "local" for d in v.disks)
                   for v in self.vms)

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)


#: the Abiquo versions the emulator plays
ABIQUO_PROFILES = ("2.4", "2.6")


def default_abiquo_profile() -> str | None:
    """``[lab] abiquo`` when the description does not say: REHOST_LAB_ABIQUO (so that a whole
    test suite can be run against the other profile), else None (2.6)."""
    return os.environ.get("REHOST_LAB_ABIQUO") or None


def _stable_uuid(lab: str, name: str) -> str:
    digest = hashlib.sha1(f"rehost-lab:{lab}:{name}".encode()).hexdigest()
    return str(uuidlib.UUID(digest[:32]))


def _check_keys(where: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"lab description: unknown key {where}{unknown[0]!r} "
                          f"(known: {', '.join(sorted(allowed))})")


def parse_description(text: str, source: str = "<string>") -> LabDescription:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"lab description {source}: {exc}") from exc
    _check_keys("", data, {"lab", "hosts", "vms", "enterprises"})
    lab = data.get("lab", {})
    _check_keys("lab.", lab, {"name", "network", "datastore", "shared_datastore", "volume_mib",
                              "control", "abiquo", "mail", "local_datastore"})
    name = str(lab.get("name", "lab"))
    control = str(lab.get("control", "abiquo"))
    if control not in ("abiquo", "libvirt"):
        raise ConfigError(f"lab description: lab.control is {control!r}: choose abiquo (an "
                          "Abiquo API emulator runs) or libvirt (plain libvirt hosts)")
    override = None if lab.get("abiquo") else default_abiquo_profile()
    abiquo = str(lab.get("abiquo") or override or "2.6")
    if abiquo not in ABIQUO_PROFILES:
        raise ConfigError(f"lab description: lab.abiquo is {abiquo!r}: choose "
                          f"{' or '.join(ABIQUO_PROFILES)} (the Abiquo version the emulator "
                          "plays)")
    hosts: list[LabHost] = []
    for i, h in enumerate(data.get("hosts", [])):
        _check_keys(f"hosts[{i}].", h, {"name", "os", "cpus", "ram_mib", "rack"})
        if h.get("os") not in PERSONALITIES:
            raise ConfigError(
                f"lab description: hosts[{i}].os is {h.get('os')!r}: choose one of "
                f"{', '.join(PERSONALITIES)}"
            )
        os_name = str(h["os"])
        if override == "2.4" and os_name == "centos-6.4":
            # a description written for 2.6, played as 2.4: Abiquo 2.4 supports CentOS 6.3
            os_name = "centos-6.3"
        hosts.append(LabHost(str(h["name"]), os_name, int(h.get("cpus", 4)),
                             int(h.get("ram_mib", 8192)), str(h.get("rack", ""))))
    if not hosts:
        raise ConfigError("lab description: no hosts")
    names = {h.name for h in hosts}
    if len(names) != len(hosts):
        raise ConfigError("lab description: two hosts have the same name")
    enterprises = _parse_enterprises(data.get("enterprises", []))
    vms: list[LabVM] = []
    for i, v in enumerate(data.get("vms", [])):
        _check_keys(f"vms[{i}].", v, {"name", "host", "uuid", "cpu", "ram_mib", "disks", "volume",
                                      "running", "captured", "configured", "enterprise",
                                      "owner", "datastore"})
        if v.get("datastore", "") not in ("", "local"):
            raise ConfigError(f"lab description: vms[{i}].datastore is {v['datastore']!r}: "
                              'leave it out (the lab\'s datastore) or say "local" (the '
                              "host's own, never shared)")
        if v.get("host") not in names:
            raise ConfigError(f"lab description: vms[{i}].host {v.get('host')!r} is not a host")
        _check_owner(i, v, enterprises)
        disks = []
        for j, d in enumerate(v.get("disks", [{}])):
            _check_keys(f"vms[{i}].disks[{j}].", d, {"size_mib", "format", "data_mib",
                                                     "datastore"})
            if d.get("datastore", "") not in ("", "local"):
                raise ConfigError(f"lab description: vms[{i}].disks[{j}].datastore: leave it "
                                  'out or say "local"')
            if d.get("format", "raw") not in ("raw", "qcow2"):
                raise ConfigError(f"lab description: vms[{i}].disks[{j}].format: raw or qcow2")
            disks.append(LabDisk(int(d.get("size_mib", 64)), str(d.get("format", "raw")),
                                 int(d.get("data_mib", 2)),
                                 str(d.get("datastore") or v.get("datastore") or "")))
        vname = str(v.get("name", f"vm{i + 1}"))
        vms.append(LabVM(vname, str(v["host"]), str(v.get("uuid") or _stable_uuid(name, vname)),
                         int(v.get("cpu", 1)), int(v.get("ram_mib", 32)), disks,
                         bool(v.get("volume", False)),
                         bool(v.get("running", True)) and not v.get("configured"),
                         abiquo=control == "abiquo", captured=bool(v.get("captured")),
                         configured=bool(v.get("configured")),
                         enterprise=str(v["enterprise"]) if v.get("enterprise") else None,
                         owner=str(v["owner"]) if v.get("owner") else None,
                         datastore=str(v.get("datastore", ""))))
    return LabDescription(
        name=name,
        network=str(lab.get("network") or default_network()),
        datastore=str(lab.get("datastore", "/var/lib/virt")),
        shared_datastore=bool(lab.get("shared_datastore", False)),
        volume_mib=int(lab.get("volume_mib", 32)),
        hosts=hosts,
        vms=vms,
        source=source,
        control=control,
        abiquo=abiquo,
        enterprises=enterprises,
        mail=bool(lab.get("mail", True)),
        local_datastore=str(lab.get("local_datastore", "/var/lib/virt-local")),
    )


def _parse_enterprises(tables: list[dict[str, Any]]) -> list[LabEnterprise]:
    out: list[LabEnterprise] = []
    for i, e in enumerate(tables):
        _check_keys(f"enterprises[{i}].", e, {"name", "users"})
        if not e.get("name"):
            raise ConfigError(f"lab description: enterprises[{i}] needs a name")
        users = []
        for j, u in enumerate(e.get("users", [])):
            _check_keys(f"enterprises[{i}].users[{j}].", u,
                        {"nick", "name", "surname", "email", "active", "vdcs"})
            if not u.get("nick"):
                raise ConfigError(f"lab description: enterprises[{i}].users[{j}] needs a nick")
            users.append(LabUser(str(u["nick"]), str(u.get("name", "")),
                                 str(u.get("surname", "")), str(u.get("email", "")),
                                 bool(u.get("active", True)),
                                 [int(x) for x in u.get("vdcs", [])]))
        out.append(LabEnterprise(str(e["name"]), users))
    if len({e.name for e in out}) != len(out):
        raise ConfigError("lab description: two enterprises have the same name")
    return out


def _check_owner(i: int, vm: dict[str, Any], enterprises: list[LabEnterprise]) -> None:
    """A VM's ``enterprise`` and ``owner`` name an enterprise and one of its users."""
    if not vm.get("enterprise") and not vm.get("owner"):
        return
    if not enterprises:
        raise ConfigError(f"lab description: vms[{i}] names an enterprise or owner, but the "
                          "description has no [[enterprises]]")
    ent = next((e for e in enterprises if e.name == vm.get("enterprise")), None)
    if vm.get("enterprise") and ent is None:
        raise ConfigError(f"lab description: vms[{i}].enterprise {vm['enterprise']!r} is not "
                          "an enterprise")
    ent = ent or enterprises[0]
    if vm.get("owner") and vm["owner"] not in {u.nick for u in ent.users}:
        raise ConfigError(f"lab description: vms[{i}].owner {vm['owner']!r} is not a user of "
                          f"enterprise {ent.name!r}")


def load_description(path: str | Path | None = None) -> LabDescription:
    """Read a lab description; ``None`` is the default lab shipped with rehost."""
    if path is None:
        text = resources.files("rehost.lab").joinpath("default.toml").read_text()
        return parse_description(text, "default.toml")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"lab description {str(p)!r} does not exist")
    return parse_description(p.read_text(), str(p))
