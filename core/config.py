"""The site config (TOML). Unknown keys and wrong values are errors that name the key.

Example (every key the core reads; see README.md and `rehost lab up` for a working one)::

    [campaign]
    name = "dc1-centos6"
    state_dir = "/var/lib/rehost/dc1"      # journal, XML backups
    report_dir = "/var/lib/rehost/dc1/reports"
    vms = "all"                            # or ["ABQ_<uuid>", "<uuid>", "web01", ...]
    parallel = 1                           # VMs moved at once (1 to 1000)
    per_host_limit = 0                     # VMs moved at once from one source host (0: any)
    per_target_limit = 0                   # copies at once into one target host (0: any)
    delete_backups = false                 # cleanup deletes X_BACK only when true
    power_off_timeout = 60                 # graceful shutdown limit, seconds, then forced
    task_timeout = 600                     # control-plane task limit, seconds
    downtime_accepted = false              # true once the VMs' users agreed to the downtime:
                                           # run refuses without it (or --accept-downtime)
    auto_rollback = false                  # a VM that fails start or verify on its new host
                                           # goes back to its source host at once
    hold_on_fault = true                   # after a fault of a host or of the control plane
                                           # (a copy failed, the API is down), no further VM
                                           # is powered off in this run
    rejoin_timeout = 0                     # run --evacuate: seconds to wait for an emptied
                                           # host to come back as CentOS 6 (0: stop; the
                                           # operator runs `rehost host rejoin NAME`)
    copy_rate_mib = 50                     # MiB/s the evacuation plan's estimates assume

    [ssh]
    config = "/etc/rehost/ssh_config"      # ssh -F; or key / known_hosts
    key = "/etc/rehost/id_ed25519"
    known_hosts = "/etc/rehost/known_hosts"
    strict_host_keys = true
    connect_timeout = 10                   # seconds

    [hosts.kvm05]                          # none: the control plane may discover them
    address = "10.0.0.5"
    role = "source"                        # source (CentOS 5) or target (CentOS 6)
    datastore = "/var/lib/virt"
    uri = "qemu+ssh://root@10.0.0.5/system"    # optional
    ssh_user = "root"
    ssh_port = 22
    rack = "rack-1"                        # optional: an evacuation keeps VMs in their rack

    [storage]
    strategy = "tar"                       # `rehost plugins` lists them; "shared" for a
                                           # datastore the hosts share
    [storage.options]                      # for every built-in strategy:
    checksum = "sha1"                      #   md5, sha1 or sha256 (the disk's content)
    digest = "sparse"                      #   hash the data, not the holes ("whole": every
                                           #   byte; the default for sha256)
    verify = "checksum"                    #   or "size": size + sampled blocks (faster)
    samples = 16                           #   1 MiB blocks compared when verify = "size"
    precopy = "auto"                       #   tar, scp: stage the disks on the predicted
                                           #   target while the VM runs (true, false, "auto":
    precopy_min_mib = 64                   #   on for disks holding at least this much data)
    bwlimit_mib = 0                        #   MiB/s cap for each copy (0: none)
    copy_with = "tar"                      #   shared: how a disk the target does not see
                                           #   is copied (tar or scp)

    [allocation]
    strategy = "loadlevel"
    [allocation.options]

    [control]                              # the control plane that owns the VMs
    strategy = "abiquo"
    [control.options]

    [backup]                               # a copy of each disk before the window
    strategy = "none"                      # "none" (the default) or "ssh" (`rehost plugins`)
    [backup.options]                       # for "ssh":
    host = "backup01"                      #   a host of [hosts], or "source" (each VM's own)
    dir = "/srv/rehost-backups"            #   copies go to DIR/<vm>/<disk file name>
    keep = true                            #   false: deleted with X_BACK (`rehost confirm`)
    checksum = "sha1"                      #   md5 or sha1: the sparse digest of the stream
    timeout = 21600                        #   seconds per disk

    [plugins]
    files = ["/etc/rehost/site_plugin.py"]
    block = []
    [plugins.site-mail]                    # a plugin's own settings, checked by that plugin
    port = 25

    [report]
    formats = ["html", "md", "json"]       # the report plugins present decide which exist
    template_dir = "/etc/rehost/templates"

A top-level table the core does not know belongs to a plugin that claims it: ``[abiquo]``
(url, user, password_file or password_env, ...) is the abiquo plugin's, described in
``rehost.abiquo.settings``. :func:`parse_config` keeps such tables in ``SiteConfig.sections``;
:func:`validate_plugin_settings` checks them, and ``[plugins.NAME]`` tables, once the plugins
are known, and refuses a table no plugin claims.

Relative paths are relative to the config file's folder.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from rehost.core.errors import ConfigError, PluginError
from rehost.core.model import Host
from rehost.core.remote import SshOptions
from rehost.core.types import PluginSettings

#: The top-level tables of the core, in the order error messages list them.
CORE_SECTIONS = ("campaign", "ssh", "hosts", "storage", "allocation", "control", "backup",
                 "plugins", "report")

# Longer waits are typos (and overflow the timeouts of sockets and threads).
_MAX_SECONDS = 7 * 24 * 3600.0


def _resolve(base: Path, p: str) -> str:
    return str((base / os.path.expanduser(p)).resolve())


def _resolve_in_context(value: str, info: ValidationInfo) -> str:
    base = (info.context or {}).get("base_dir")
    return _resolve(Path(base) if base is not None else Path.cwd(), value)


#: A path in the config: relative to the config file's folder (``context["base_dir"]``).
ConfigPath = Annotated[str, AfterValidator(_resolve_in_context)]
Seconds = Annotated[float, Field(gt=0, le=_MAX_SECONDS, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1)]


class _Section(BaseModel):
    # strict: TOML values are typed; "2" is not a number and 1 is not true
    model_config = ConfigDict(extra="forbid", strict=True)

    #: fields not filled from a key of the table itself: never offered as known keys
    not_keys: ClassVar[frozenset[str]] = frozenset()


class CampaignConfig(_Section):
    name: str = "campaign"
    state_dir: ConfigPath = Field(default="./rehost-state", validate_default=True)
    report_dir: str = ""
    vms: str | list[str] = "all"
    parallel: int = Field(default=1, gt=0, le=1000)
    per_host_limit: int = Field(default=0, ge=0, le=1000)
    #: copies running at once into one target host (its disks and network are shared by
    #: them); 0: no such limit
    per_target_limit: int = Field(default=0, ge=0, le=1000)
    delete_backups: bool = False
    power_off_timeout: Seconds = 60.0
    task_timeout: Seconds = 600.0
    downtime_accepted: bool = False
    #: a VM that fails `start` or `verify` on its target goes back to its source host at once
    auto_rollback: bool = False
    #: after a fault of a host or of the control plane (a copy or a command that failed, the
    #: API unreachable), no further VM is powered off in this run
    hold_on_fault: bool = True
    #: an evacuation (`run --evacuate`): how long to wait for an emptied host to come back
    #: as CentOS 6 (a site plugin reinstalls it on rehost_host_emptied); 0: stop there, the
    #: operator reinstalls it and runs `rehost host rejoin NAME`, then `rehost resume`
    rejoin_timeout: float = Field(default=0.0, ge=0, le=_MAX_SECONDS, allow_inf_nan=False)
    #: the copy rate the evacuation plan's downtime estimates assume (MiB/s)
    copy_rate_mib: float = Field(default=50.0, gt=0, le=100000)

    @field_validator("report_dir")
    @classmethod
    def _report_dir(cls, value: str, info: ValidationInfo) -> str:
        # "" means <state_dir>/reports (SiteConfig.report_dir), not the config's folder
        return _resolve_in_context(value, info) if value else ""

    @field_validator("vms", mode="before")
    @classmethod
    def _vms(cls, value: Any) -> Any:
        # one message for the two shapes, instead of one error per member of the union
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ValueError("must list VM names as strings")
        elif value != "all":
            raise ValueError(f'must be "all" or a list of VM names, not {value!r}')
        return value


class _SshSection(_Section):
    config: ConfigPath | None = None
    key: ConfigPath | None = None
    known_hosts: ConfigPath | None = None
    strict_host_keys: bool = True
    connect_timeout: int = Field(default=10, gt=0, le=3600)


class _HostSection(_Section):
    address: Name
    role: Literal["source", "target"]
    uri: str = ""
    datastore: Name = "/var/lib/virt"
    ssh_user: Name = "root"
    ssh_port: int = Field(default=22, gt=0, le=65535)
    rack: str = Field(default="", max_length=200)


class StrategyConfig(_Section):
    strategy: Name
    options: dict[str, Any] = Field(default_factory=dict)


class PluginsConfig(_Section):
    files: list[ConfigPath] = Field(default_factory=list)
    block: list[str] = Field(default_factory=list)
    #: the raw ``[plugins.<name>]`` tables; validate_plugin_settings checks them
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)

    not_keys = frozenset({"settings"})


class ReportConfig(_Section):
    formats: list[str] = Field(default_factory=lambda: ["html", "md", "json"])
    template_dir: ConfigPath | None = None


_STRATEGY_DEFAULTS = {"storage": "tar", "allocation": "loadlevel", "control": "abiquo",
                      "backup": "none"}


class _Document(BaseModel):
    # unknown top-level tables are kept for the plugins that claim them; they must be tables
    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[str, dict[str, Any]] = Field(init=False)

    campaign: CampaignConfig
    ssh: _SshSection
    hosts: dict[str, _HostSection]
    storage: StrategyConfig
    allocation: StrategyConfig
    control: StrategyConfig
    backup: StrategyConfig
    plugins: PluginsConfig
    report: ReportConfig

    @model_validator(mode="before")
    @classmethod
    def _every_section(cls, data: Any) -> Any:
        # a missing section is an empty one, validated like any other: its defaults go through
        # the same validators (state_dir is relative to the config's folder, not to the cwd)
        if isinstance(data, dict):
            return {**{key: {} for key in CORE_SECTIONS}, **data}
        return data

    @field_validator("storage", "allocation", "control", "backup", mode="before")
    @classmethod
    def _default_strategy(cls, value: Any, info: ValidationInfo) -> Any:
        # the default strategy differs per section; StrategyConfig itself has none
        if isinstance(value, dict) and "strategy" not in value:
            return {"strategy": _STRATEGY_DEFAULTS[info.field_name or ""], **value}
        return value

    @field_validator("plugins", mode="before")
    @classmethod
    def _plugin_tables(cls, value: Any) -> Any:
        # [plugins.NAME] tables are settings; any other key is checked as a key of [plugins].
        # A non-table `settings` key is left in place to be refused, not overwritten.
        if not isinstance(value, dict) or not isinstance(value.get("settings", {}), dict):
            return value
        tables = {k: v for k, v in value.items()
                  if k not in ("files", "block") and isinstance(v, dict)}
        rest = {k: v for k, v in value.items() if k not in tables}
        return {**rest, "settings": tables}


@dataclass
class SiteConfig:
    path: str
    campaign: CampaignConfig = field(default_factory=CampaignConfig)
    ssh: SshOptions = field(default_factory=SshOptions)
    hosts: dict[str, Host] = field(default_factory=dict)
    storage: StrategyConfig = field(default_factory=lambda: StrategyConfig(strategy="tar"))
    allocation: StrategyConfig = field(
        default_factory=lambda: StrategyConfig(strategy="loadlevel"))
    control: StrategyConfig = field(default_factory=lambda: StrategyConfig(strategy="abiquo"))
    #: the backup before the window (``backup_disks``): "none" makes none
    backup: StrategyConfig = field(default_factory=lambda: StrategyConfig(strategy="none"))
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    #: top-level tables the core does not know, for the plugins that claim them
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)

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

    def resolve_path(self, p: str | None) -> str | None:
        """``p`` relative to the config file's folder (``~`` expanded)."""
        return None if p is None else _resolve(self.base_dir, p)


# -- pydantic errors as messages that name the key ---------------------------------------------

# What a value of the core's sections must be, by pydantic error type (str.format'ed with the
# error's ctx and input). Other errors keep pydantic's wording after the key.
_MUST = {
    "int_type": "must be a whole number, not {input!r}",
    "int_from_float": "must be a whole number, not {input!r}",
    "float_type": "must be a number, not {input!r}",
    "bool_type": "must be true or false, not {input!r}",
    "string_type": "must be a string, not {input!r}",
    "list_type": "must be a list, not {input!r}",
    "dict_type": "must be a table, not {input!r}",
    "model_type": "must be a table, not {input!r}",
    "finite_number": "must be a finite number, not {input!r}",
    "greater_than": "must be more than {gt}, not {input!r}",
    "greater_than_equal": "must be {ge} or more, not {input!r}",
    "less_than": "must be less than {lt}, not {input!r}",
    "less_than_equal": "must be at most {le}, not {input!r}",
    "literal_error": "must be {expected}, not {input!r}",
    "string_too_short": "must not be empty",
}
# The same for an item of a list: "<list> must list <these>: item N is <input>".
_ITEMS = {"int_type": "whole numbers", "float_type": "numbers", "bool_type": "true or false",
          "string_type": "strings", "list_type": "lists", "dict_type": "tables",
          "model_type": "tables"}


def _key(loc: tuple[str | int, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else part
    return key


def _known_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys of the table at ``loc`` (relative to ``model``)."""
    kind: Any = model
    for part in loc:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            if str(part) not in kind.model_fields:
                return []
            kind = kind.model_fields[str(part)].annotation
        elif get_origin(kind) in (dict, list):
            # the key of a dict (hosts.NAME) or the index of a list: into the values' type
            kind = get_args(kind)[-1]
        else:
            return []
        if get_origin(kind) in (Union, UnionType):
            # X | None: the table is the X
            kind = next((a for a in get_args(kind) if a is not type(None)), kind)
    if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
        return []
    hidden: frozenset[str] = getattr(kind, "not_keys", frozenset())
    return sorted(k for k in kind.model_fields if k not in hidden)


def _message(err: ErrorDetails, where: tuple[str, ...], model: type[BaseModel],
             plugin: str | None) -> str:
    loc = err["loc"]
    key = _key((*where, *loc))
    kind = err["type"]
    ctx = dict(err.get("ctx") or {})
    if kind == "extra_forbidden":
        known = ", ".join(_known_keys(model, loc[:-1]))
        if plugin:
            return f"unknown key {key} for plugin '{plugin}' (known: {known})"
        return f"unknown key {key} (known keys in [{_key((*where, *loc[:-1]))}]: {known})"
    if kind == "missing":
        text = f"missing key {key}"
    elif kind in ("value_error", "assertion_error"):
        # our validators' own words: "must ..." follows the key; a message naming its key
        # (abiquo.password: ...) or at the top of the document is kept as it is
        text = str(ctx.get("error", err["msg"]))
        if not key or text == key or text.startswith((f"{key}.", f"{key}:", f"{key} ")):
            pass
        elif text.startswith("must "):
            text = f"{key} {text}"
        else:
            text = f"{key}: {text}"
    elif plugin is None and loc and isinstance(loc[-1], int) and kind in _ITEMS:
        text = (f"{_key((*where, *loc[:-1]))} must list {_ITEMS[kind]}: item {loc[-1] + 1} "
                f"is {err['input']!r}")
    elif plugin is None and kind in _MUST:
        # pydantic keeps a bound in the field's type: "more than 0", not "more than 0.0"
        ctx = {k: int(v) if isinstance(v, float) and v.is_integer() else v
               for k, v in ctx.items()}
        if kind == "literal_error":
            # pydantic quotes the choices: 'source' or 'target'
            ctx["expected"] = str(ctx.get("expected", "")).replace("'", "")
        text = f"{key} {_MUST[kind].format(input=err['input'], **ctx)}"
    else:
        # a plugin's model may use any pydantic type: pydantic words those errors best
        text = f"{key}: {err['msg']}"
    return f"{text} (plugin '{plugin}')" if plugin else text


def _config_error(exc: ValidationError, model: type[BaseModel], where: tuple[str, ...] = (),
                  plugin: str | None = None) -> ConfigError:
    """The ConfigError of a pydantic error: one line per problem, each naming its key."""
    lines = [_message(err, where, model, plugin) for err in exc.errors(include_url=False)]
    return ConfigError("\n".join(dict.fromkeys(lines)))


# -- parsing -----------------------------------------------------------------------------------


def parse_config(text: str, path: str = "<string>") -> SiteConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    # abspath, not resolve: a symlinked config keeps the folder it was named in
    base = Path.cwd() if path == "<string>" else Path(os.path.abspath(path)).parent
    try:
        doc = _Document.model_validate(data, context={"base_dir": base})
    except ValidationError as exc:
        # from None: the pydantic error repeats the input, and says nothing the message does not
        raise _config_error(exc, _Document) from None
    ssh = SshOptions(**doc.ssh.model_dump())
    hosts = {name: Host(name=name, **h.model_dump()) for name, h in doc.hosts.items()}
    return SiteConfig(path=path, campaign=doc.campaign, ssh=ssh, hosts=hosts,
                      storage=doc.storage, allocation=doc.allocation, control=doc.control,
                      backup=doc.backup, plugins=doc.plugins, report=doc.report,
                      sections=dict(doc.model_extra or {}), base_dir=base)


def load_config(path: str | Path) -> SiteConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"site config {str(p)!r} does not exist")
    return parse_config(p.read_text(), str(p))


def validate_plugin_settings(config: SiteConfig, specs: list[PluginSettings],
                             plugins: list[str]) -> dict[str, BaseModel]:
    """Check the plugins' settings: each spec's table (``[plugins.<plugin>]``, or the
    top-level section it claims) against its model, and refuse the tables no registered plugin
    reads. ``plugins``: the names of the registered plugins. Returns {plugin: settings}."""
    claimed: dict[str, str] = {}
    for spec in specs:
        if spec.section is None:
            continue
        if spec.section in CORE_SECTIONS or spec.section in claimed:
            owner = ("rehost" if spec.section in CORE_SECTIONS
                     else f"plugin {claimed[spec.section]!r}")
            raise PluginError(f"plugin {spec.plugin!r} claims [{spec.section}], which {owner} "
                              "reads")
        claimed[spec.section] = spec.plugin
    for section in config.sections:
        if section not in claimed:
            known = ", ".join([*CORE_SECTIONS, *sorted(claimed)])
            raise ConfigError(f"unknown section [{section}] in {config.path} (known: {known})")

    declared = {spec.plugin: spec for spec in specs}
    for name in config.plugins.settings:
        taker = declared.get(name)
        if taker is not None and taker.section:
            raise ConfigError(f"[plugins.{name}]: plugin '{name}' reads its settings from "
                              f"[{taker.section}]")
        if taker is None and name in plugins:
            raise ConfigError(f"plugin '{name}' takes no settings")
        if taker is None:
            raise ConfigError(f"[plugins.{name}]: no plugin is named '{name}' "
                              "(rehost plugins lists them)")

    settings: dict[str, BaseModel] = {}
    for spec in specs:
        table = (config.sections.get(spec.section) if spec.section
                 else config.plugins.settings.get(spec.plugin))
        try:
            settings[spec.plugin] = spec.model.model_validate(
                table or {}, context={"base_dir": config.base_dir})
        except ValidationError as exc:
            if table is None:
                # no table, and the plugin has no defaults for what it needs: it has no
                # settings (ctx.settings() is None), and says so itself if they are needed
                continue
            # from None: the pydantic error repeats the input, which may hold a secret
            where = (spec.section,) if spec.section else ("plugins", spec.plugin)
            raise _config_error(exc, spec.model, where, spec.plugin) from None
    return settings
