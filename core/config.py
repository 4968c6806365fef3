"""The site config (TOML). Unknown keys and wrong values are errors that name the key.

Example (every key; see README.md and `rehost lab up` for a working one)::

    [campaign]
    name = "dc1-centos6"
    state_dir = "/var/lib/rehost/dc1"      # journal, XML backups
    report_dir = "/var/lib/rehost/dc1/reports"
    vms = "all"                            # or ["ABQ_<uuid>", "<uuid>", "web01", ...]
    parallel = 1                           # VMs moved at once
    per_host_limit = 0                     # VMs moved at once from one source host (0: any)
    delete_backups = false                 # cleanup deletes X_BACK only when true
    power_off_timeout = 60                 # graceful shutdown limit, seconds, then forced
    task_timeout = 600                     # Abiquo task limit, seconds
    downtime_accepted = false              # true once the VMs' users agreed to the downtime:
                                           # run refuses without it (or --accept-downtime)

    [ssh]
    config = "/etc/rehost/ssh_config"      # ssh -F; or key / known_hosts
    strict_host_keys = true

    [abiquo]
    url = "https://abiquo.example.com/api"
    user = "admin"
    password_file = "/etc/rehost/abiquo.password"   # or password_env = "ABIQUO_PASSWORD"
    version = "2.6"
    verify_tls = true                      # false: no TLS verification (not advised)
    ca_file = "/etc/rehost/abiquo-ca.pem"  # optional: the CA that signed Abiquo's certificate
    aim_version = "2.1.4"

    [hosts.kvm05]                          # or discover = true under [abiquo]
    address = "10.0.0.5"
    role = "source"                        # source (CentOS 5) or target (CentOS 6)
    datastore = "/var/lib/virt"
    uri = "qemu+ssh://root@10.0.0.5/system"    # optional

    [storage]
    strategy = "scp"                       # `rehost plugins` lists them
    [storage.options]                      # for every built-in copying strategy:
    checksum = "sha1"                      #   md5, sha1 or sha256 (whole disk, both ends)
    verify = "checksum"                    #   or "size": size + sampled blocks (faster)
    samples = 16                           #   1 MiB blocks compared when verify = "size"

    [allocation]
    strategy = "loadlevel"
    [allocation.options]

    [plugins]
    files = ["/etc/rehost/site_plugin.py"]
    block = []

    [report]
    formats = ["html", "md", "json"]
    template_dir = "/etc/rehost/templates"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehost.core.errors import ConfigError
from rehost.core.model import Host
from rehost.core.remote import SshOptions


@dataclass
class CampaignConfig:
    name: str = "campaign"
    state_dir: str = "./rehost-state"
    report_dir: str = ""
    vms: str | list[str] = "all"
    parallel: int = 1
    per_host_limit: int = 0
    delete_backups: bool = False
    power_off_timeout: float = 60.0
    task_timeout: float = 600.0
    downtime_accepted: bool = False


@dataclass
class AbiquoConfig:
    url: str
    user: str
    password_file: str | None = None
    password_env: str | None = None
    version: str = "2.6"
    verify_tls: bool = True
    ca_file: str | None = None
    timeout: float = 30.0
    aim_version: str | None = None
    discover: bool = False

    def password(self) -> str:
        """The password, read when needed and never stored in the config object."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"abiquo.password_env: environment variable "
                                  f"{self.password_env} is not set")
            return value
        if self.password_file:
            try:
                return Path(self.password_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"abiquo.password_file: cannot read "
                                  f"{self.password_file!r}: {exc.strerror}") from exc
        raise ConfigError("abiquo: set password_file or password_env")


@dataclass
class StrategyConfig:
    strategy: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PluginsConfig:
    files: list[str] = field(default_factory=list)
    block: list[str] = field(default_factory=list)


@dataclass
class ReportConfig:
    formats: list[str] = field(default_factory=lambda: ["html", "md", "json"])
    template_dir: str | None = None


@dataclass
class SiteConfig:
    path: str
    campaign: CampaignConfig
    ssh: SshOptions
    abiquo: AbiquoConfig | None
    hosts: dict[str, Host]
    storage: StrategyConfig
    allocation: StrategyConfig
    plugins: PluginsConfig
    report: ReportConfig

    @property
    def state_dir(self) -> Path:
        return Path(self.campaign.state_dir)

    @property
    def report_dir(self) -> Path:
        return Path(self.campaign.report_dir or os.path.join(self.campaign.state_dir, "reports"))

    def sources(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.role == "source"]

    def targets(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.role == "target"]


# -- validation --------------------------------------------------------------------------------

_SECTIONS = {"campaign", "ssh", "abiquo", "hosts", "storage", "allocation", "plugins", "report"}


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}{key} must be a table")
    return value


def _known(section: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"unknown key {section}.{key} (known keys in [{section}]: "
                              f"{', '.join(sorted(allowed))})")


def _get(section: str, table: dict[str, Any], key: str, kind: type | tuple[type, ...],
         default: Any = None, required: bool = False) -> Any:
    if key not in table:
        if required:
            raise ConfigError(f"missing key {section}.{key}")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and kind is not bool and bool not in (
            kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{section}.{key} must be {_kind_name(kind)}, not {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{section}.{key} must be {_kind_name(kind)}, not {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _positive(section: str, key: str, value: float) -> float:
    if value <= 0:
        raise ConfigError(f"{section}.{key} must be more than 0, not {value!r}")
    return value


def parse_config(text: str, path: str = "<string>") -> SiteConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    for key in data:
        if key not in _SECTIONS:
            raise ConfigError(f"unknown section [{key}] in {path} (known: "
                              f"{', '.join(sorted(_SECTIONS))})")
    base = Path(path).parent if path != "<string>" else Path.cwd()

    def resolve(p: str | None) -> str | None:
        return None if p is None else str((base / os.path.expanduser(p)).resolve())

    c = _table(data, "campaign", "")
    _known("campaign", c, set(CampaignConfig.__dataclass_fields__))
    vms = _get("campaign", c, "vms", (str, list), "all")
    if isinstance(vms, str) and vms != "all":
        raise ConfigError(f'campaign.vms must be "all" or a list of VM names, not {vms!r}')
    if isinstance(vms, list) and not all(isinstance(v, str) for v in vms):
        raise ConfigError("campaign.vms must list VM names as strings")
    if _get("campaign", c, "per_host_limit", int, 0) < 0:
        raise ConfigError("campaign.per_host_limit must be 0 (no limit) or more")
    campaign = CampaignConfig(
        name=_get("campaign", c, "name", str, "campaign"),
        state_dir=resolve(_get("campaign", c, "state_dir", str, "./rehost-state")) or "",
        report_dir=resolve(_get("campaign", c, "report_dir", str)) or "",
        vms=vms,
        parallel=int(_positive("campaign", "parallel", _get("campaign", c, "parallel", int, 1))),
        per_host_limit=_get("campaign", c, "per_host_limit", int, 0),
        delete_backups=_get("campaign", c, "delete_backups", bool, False),
        power_off_timeout=_positive("campaign", "power_off_timeout",
                                    _get("campaign", c, "power_off_timeout", float, 60.0)),
        task_timeout=_positive("campaign", "task_timeout",
                               _get("campaign", c, "task_timeout", float, 600.0)),
        downtime_accepted=_get("campaign", c, "downtime_accepted", bool, False),
    )

    s = _table(data, "ssh", "")
    _known("ssh", s, {"config", "key", "known_hosts", "strict_host_keys", "connect_timeout"})
    ssh = SshOptions(
        config=resolve(_get("ssh", s, "config", str)),
        key=resolve(_get("ssh", s, "key", str)),
        known_hosts=resolve(_get("ssh", s, "known_hosts", str)),
        strict_host_keys=_get("ssh", s, "strict_host_keys", bool, True),
        connect_timeout=_get("ssh", s, "connect_timeout", int, 10),
    )

    abiquo = None
    if "abiquo" in data:
        a = _table(data, "abiquo", "")
        # before the unknown-key check: say why, not just that the key is unknown
        if "password" in a:
            raise ConfigError("abiquo.password: put the password in a file (password_file) or "
                              "an environment variable (password_env), not in the config")
        _known("abiquo", a, set(AbiquoConfig.__dataclass_fields__))
        url = _get("abiquo", a, "url", str, required=True)
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"abiquo.url must start with https:// (or http://), not {url!r}")
        version = _get("abiquo", a, "version", str, "2.6")
        if version not in ("2.4", "2.6"):
            raise ConfigError(f"abiquo.version must be 2.4 or 2.6, not {version!r}")
        abiquo = AbiquoConfig(
            url=url.rstrip("/"),
            user=_get("abiquo", a, "user", str, required=True),
            password_file=resolve(_get("abiquo", a, "password_file", str)),
            password_env=_get("abiquo", a, "password_env", str),
            version=version,
            verify_tls=_get("abiquo", a, "verify_tls", bool, True),
            ca_file=resolve(_get("abiquo", a, "ca_file", str)),
            timeout=_positive("abiquo", "timeout", _get("abiquo", a, "timeout", float, 30.0)),
            aim_version=_get("abiquo", a, "aim_version", str),
            discover=_get("abiquo", a, "discover", bool, False),
        )
        if not (abiquo.password_file or abiquo.password_env):
            raise ConfigError("abiquo: set password_file or password_env")

    hosts: dict[str, Host] = {}
    for name, h in _table(data, "hosts", "").items():
        sec = f"hosts.{name}"
        if not isinstance(h, dict):
            raise ConfigError(f"{sec} must be a table")
        _known(sec, h, {"address", "uri", "role", "datastore", "ssh_user", "ssh_port"})
        role = _get(sec, h, "role", str, required=True)
        if role not in ("source", "target"):
            raise ConfigError(f"{sec}.role must be source or target, not {role!r}")
        hosts[name] = Host(
            name=name,
            address=_get(sec, h, "address", str, required=True),
            uri=_get(sec, h, "uri", str, ""),
            role=role,
            datastore=_get(sec, h, "datastore", str, "/var/lib/virt"),
            ssh_user=_get(sec, h, "ssh_user", str, "root"),
            ssh_port=_get(sec, h, "ssh_port", int, 22),
        )
    if not hosts and not (abiquo and abiquo.discover):
        raise ConfigError("no hosts: add [hosts.NAME] tables, or discover = true under [abiquo]")

    def strategy(section: str, default: str) -> StrategyConfig:
        t = _table(data, section, "")
        _known(section, t, {"strategy", "options"})
        opts = _get(section, t, "options", dict, {})
        return StrategyConfig(_get(section, t, "strategy", str, default), dict(opts))

    p = _table(data, "plugins", "")
    _known("plugins", p, {"files", "block"})
    files = _get("plugins", p, "files", list, [])
    block = _get("plugins", p, "block", list, [])
    for key, values in (("files", files), ("block", block)):
        if not all(isinstance(v, str) for v in values):
            raise ConfigError(f"plugins.{key} must list strings, not {values!r}")
    plugins = PluginsConfig([resolve(f) or "" for f in files], list(block))

    r = _table(data, "report", "")
    _known("report", r, {"formats", "template_dir"})
    formats = _get("report", r, "formats", list, ["html", "md", "json"])
    for f in formats:
        if f not in ("html", "md", "json"):
            raise ConfigError(f"report.formats: {f!r} is not a format: choose html, md or json")
    report = ReportConfig(formats, resolve(_get("report", r, "template_dir", str)))

    return SiteConfig(path, campaign, ssh, abiquo, hosts, strategy("storage", "scp"),
                      strategy("allocation", "loadlevel"), plugins, report)


def load_config(path: str | Path) -> SiteConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"site config {str(p)!r} does not exist")
    return parse_config(p.read_text(), str(p))
