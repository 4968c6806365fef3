"""The plugin manager: built-in plugins, site plugins (entry points and files), blocking, and
the typed facade through which the core calls hooks.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from rehost.core.errors import ConfigError, PluginError
from rehost.core.strategies import KINDS, NoBackup, Strategy
from rehost.core.types import (
    VM,
    Context,
    FenceResult,
    Finding,
    Host,
    PluginSettings,
    Result,
    StrategyRecord,
    TargetLoad,
    UnfenceResult,
    check_result,
)
from rehost.hooks import ENTRY_POINT_GROUP, PROJECT, specs

if TYPE_CHECKING:
    from pluggy import HookCaller

#: Built-in plugins, registered in this order, each by a short name a site can block.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("control", "rehost.plugins.control"),
    ("abiquo", "rehost.plugins.abiquo"),
    ("libvirt", "rehost.plugins.libvirt"),
    ("notify", "rehost.plugins.notify"),
    ("backup", "rehost.plugins.backup"),
    ("mail", "rehost.plugins.mail"),
    ("storage", "rehost.plugins.storage"),
    ("storage-shared", "rehost.plugins.storage.shared"),
    ("storage-scp", "rehost.plugins.storage.scp"),
    ("storage-tar", "rehost.plugins.storage.tar"),
    ("allocation", "rehost.plugins.allocation"),
    ("allocation-performance", "rehost.plugins.allocation.performance"),
    ("allocation-loadlevel", "rehost.plugins.allocation.loadlevel"),
    ("allocation-halt", "rehost.plugins.allocation.halt"),
    ("preflight", "rehost.plugins.preflight"),
    ("report-markdown", "rehost.reports.markdown"),
    ("report-html", "rehost.reports.html"),
    ("report-json", "rehost.reports.json_report"),
)


@dataclass
class PluginInfo:
    """A registered plugin and where it came from."""

    name: str
    origin: str  # "builtin", "entry point", "file"
    where: str  # module name, "dist==version: module", or file path
    hooks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "origin": self.origin, "where": self.where, "hooks": self.hooks}


class PluginManager:
    """A pluggy manager that remembers where each plugin came from."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(specs)
        self.infos: dict[str, PluginInfo] = {}
        self.blocked: set[str] = set()
        self.hooks = Hooks(self)

    # -- registration -------------------------------------------------------------------------

    def block(self, name: str) -> None:
        self.blocked.add(name)
        self.pm.set_blocked(name)

    def register(self, plugin: object, name: str, origin: str, where: str) -> None:
        if name in self.blocked:
            return
        if name in self.infos:
            raise PluginError(
                f"two plugins are named {name!r}: {self.infos[name].where} and {where}"
            )
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} ({where}) is not valid: {exc}") from exc
        callers = self.pm.get_hookcallers(plugin) or []
        # pluggy accepts an implementation of a hook nobody specified (it waits for a spec):
        # for us that is a misspelled hook that would silently never run
        unknown = sorted(
            h.name for h in callers
            if not h.has_spec() and not any(
                i.plugin is plugin and i.optionalhook for i in h.get_hookimpls())
        )
        if unknown:
            self.pm.unregister(plugin)
            known = [h for h in dir(specs) if h.startswith(f"{PROJECT}_")]
            hints = []
            for hook in unknown:
                close = difflib.get_close_matches(hook, known, n=1)
                hints.append(f"{hook} (did you mean {close[0]}?)" if close else hook)
            raise PluginError(f"plugin {name!r} ({where}) implements hooks rehost does not "
                              f"have: {', '.join(hints)}")
        hooks = sorted(h.name for h in callers)
        self.infos[name] = PluginInfo(name, origin, where, hooks)

    def load_builtins(self, only: Iterable[str] | None = None) -> None:
        wanted = set(only) if only is not None else None
        for name, module in BUILTIN_PLUGINS:
            if name in self.blocked or (wanted is not None and name not in wanted):
                continue
            self.register(importlib.import_module(module), name, "builtin", module)

    def load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.blocked:
                continue
            dist = f"{ep.dist.name}=={ep.dist.version}" if ep.dist else "?"
            where = f"{dist}: {ep.value}"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"site plugin entry point {ep.name!r} ({where}) failed to load: {exc}"
                ) from exc
            self.register(plugin, ep.name, "entry point", where)

    def load_file(self, path: str | Path) -> None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"plugin file {str(p)!r} does not exist")
        name = p.stem
        if name in self.blocked:
            return
        modname = f"rehost_site_plugin_{name}"
        spec = importlib.util.spec_from_file_location(modname, p)
        if spec is None or spec.loader is None:
            raise PluginError(f"plugin file {str(p)!r} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise PluginError(f"plugin file {str(p)!r} failed to load: {exc}") from exc
        self.register(module, name, "file", str(p.resolve()))

    # -- what is there ------------------------------------------------------------------------

    def strategies(self, kind: str) -> dict[str, StrategyRecord]:
        """The strategies of one kind, by name; a duplicate name is an error naming both."""
        found: dict[str, StrategyRecord] = {}
        for plugin_name, records in self.hooks.strategy_offers(kind):
            for rec in records:
                if not isinstance(rec, StrategyRecord):
                    raise PluginError(
                        f"plugin {plugin_name!r} offered a {kind} strategy that is not a "
                        f"StrategyRecord: {rec!r}"
                    )
                rec = StrategyRecord(rec.kind, rec.name, rec.description, rec.factory, plugin_name)
                if rec.name in found:
                    raise PluginError(
                        f"{kind} strategy {rec.name!r} is offered by two plugins: "
                        f"{found[rec.name].plugin!r} and {plugin_name!r}"
                    )
                found[rec.name] = rec
        if kind == "backup" and "none" not in found:
            # the default needs no plugin: a site that blocks every backup plugin still runs
            found["none"] = StrategyRecord("backup", "none", "no backup of the disks before "
                                           "the window (the default)", NoBackup, "rehost")
        return found

    def strategy(self, kind: str, name: str) -> StrategyRecord:
        found = self.strategies(kind)
        if name not in found:
            choices = ", ".join(sorted(found)) or "(none)"
            raise ConfigError(f"unknown {kind} strategy {name!r}: choose one of {choices}")
        return found[name]

    def build_strategy(self, kind: str, name: str, options: dict[str, Any]) -> Strategy:
        """The strategy ``name`` of ``kind``, built from its options; a factory that builds
        something else than the kind's base class is an error naming the plugin."""
        record = self.strategy(kind, name)
        built = record.factory(dict(options))
        base = KINDS[kind]
        if not isinstance(built, base):
            raise PluginError(f"plugin {record.plugin!r}: its {kind} strategy {name!r} is a "
                              f"{type(built).__name__}, not a {base.__module__}."
                              f"{base.__name__} (rehost.api.{base.__name__})")
        return built

    def settings_specs(self) -> list[PluginSettings]:
        """Every plugin's declared settings, each checked to come from that plugin."""
        out: list[PluginSettings] = []
        for plugin_name, specs_ in self.hooks.plugin_settings():
            for spec in specs_:
                if not isinstance(spec, PluginSettings):
                    raise PluginError(f"plugin {plugin_name!r} declared settings that are not "
                                      f"a PluginSettings: {spec!r}")
                if spec.plugin != plugin_name:
                    raise PluginError(f"plugin {plugin_name!r} declared the settings of "
                                      f"{spec.plugin!r}: a plugin declares its own")
                out.append(spec)
        return out

    def listing(self) -> list[PluginInfo]:
        return list(self.infos.values())


def build_plugin_manager(
    *,
    block: Sequence[str] = (),
    plugin_files: Sequence[str | Path] = (),
    extra: Sequence[tuple[object, str]] = (),
    entry_points: bool = True,
    builtins: Iterable[str] | None = None,
) -> PluginManager:
    """Build a plugin manager: built-ins, then entry-point plugins, then plugin files, then
    ``extra`` (plugin objects with names, as tests and the lab register them).

    :param block: plugin names not to register (built-in, entry point or file stem).
    :param builtins: register only these built-ins (default: all).
    """
    manager = PluginManager()
    for name in block:
        manager.block(name)
    manager.load_builtins(builtins)
    if entry_points:
        manager.load_entry_points()
    for path in plugin_files:
        manager.load_file(path)
    for plugin, name in extra:
        manager.register(plugin, name, "in-process", repr(plugin))
    return manager


class Hooks:
    """The typed facade the core calls hooks through (keywords only, one place)."""

    def __init__(self, manager: PluginManager) -> None:
        self._pm = manager.pm
        self._hook = manager.pm.hook

    def _per_plugin(self, caller: HookCaller) -> list[tuple[str, list[Any]]]:
        """A registry hook asked plugin by plugin, each answer with the plugin's name."""
        offers: list[tuple[str, list[Any]]] = []
        for impl in caller.get_hookimpls():
            records: list[Any] = list(impl.function() or [])  # type: ignore[call-overload]
            offers.append((self._pm.get_name(impl.plugin) or "?", records))
        return offers

    def _perform(self, caller: HookCaller, **kwargs: Any) -> tuple[str, Any] | None:
        """A ``firstresult`` hook, called implementation by implementation in pluggy's order
        (tryfirst and last registered first) through pluggy itself (call monitoring and
        tracing see every call), so that the answer is known to come from one plugin: it is
        checked in that plugin's name. Hook wrappers are not run around these hooks."""
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            value = self._pm._hookexec(caller.name, [impl], kwargs, True)
            if value is not None:
                return self._pm.get_name(impl.plugin) or "?", value
        return None

    def strategy_offers(self, kind: str) -> list[tuple[str, list[Any]]]:
        """Each plugin's offer of strategies of a kind (``storage``, ``allocation``,
        ``control``, ``backup``) with the plugin's name, so that a duplicate name can be
        reported with both plugins."""
        caller = {
            "storage": self._hook.rehost_storage_strategies,
            "allocation": self._hook.rehost_allocation_strategies,
            "control": self._hook.rehost_control_planes,
            "backup": self._hook.rehost_backup_strategies,
        }[kind]
        return self._per_plugin(caller)

    def plugin_settings(self) -> list[tuple[str, list[Any]]]:
        return self._per_plugin(self._hook.rehost_plugin_settings)

    def report_formats(self) -> list[str]:
        out: list[str] = []
        for _, formats in self._per_plugin(self._hook.rehost_report_formats):
            out.extend(f for f in formats if f not in out)
        return out

    def discover_hosts(self, ctx: Context) -> list[Host]:
        found: list[Host] | None = self._hook.rehost_discover_hosts(ctx=ctx)
        return found or []

    def configure(self, ctx: Context) -> None:
        self._hook.rehost_configure(ctx=ctx)

    def unconfigure(self, ctx: Context) -> None:
        self._hook.rehost_unconfigure(ctx=ctx)

    def preflight(self, ctx: Context) -> list[Finding]:
        out: list[Finding] = []
        for findings in self._hook.rehost_preflight(ctx=ctx):
            out.extend(findings or [])
        return out

    def select_vms(self, ctx: Context) -> list[VM] | None:
        result: list[VM] | None = self._hook.rehost_select_vms(ctx=ctx)
        return result

    def fence(self, ctx: Context) -> FenceResult:
        return self._checked("fence", self._perform(self._hook.rehost_fence, ctx=ctx),
                             FenceResult)

    def unfence(self, ctx: Context, fenced: FenceResult) -> UnfenceResult:
        return self._checked("unfence", self._perform(self._hook.rehost_unfence, ctx=ctx,
                                                      fenced=fenced), UnfenceResult)

    @staticmethod
    def _checked(stage: str, answer: tuple[str, Any] | None, cls: type[R]) -> R:
        result = _stage_result(stage, answer, hook=f"rehost_{stage}")
        assert isinstance(result, cls)
        return result

    def campaign_start(self, ctx: Context, vms: list[VM]) -> None:
        self._hook.rehost_campaign_start(ctx=ctx, vms=vms)

    def campaign_finish(self, ctx: Context, outcome: dict[str, str]) -> None:
        self._hook.rehost_campaign_finish(ctx=ctx, outcome=outcome)

    def host_capacity(self, ctx: Context, host: str) -> TargetLoad | None:
        found: TargetLoad | None = self._hook.rehost_host_capacity(ctx=ctx, host=host)
        return found

    def host_emptied(self, ctx: Context, host: str, wave: int) -> None:
        self._hook.rehost_host_emptied(ctx=ctx, host=host, wave=wave)

    def host_rejoined(self, ctx: Context, host: str) -> None:
        self._hook.rehost_host_rejoined(ctx=ctx, host=host)

    def stage_start(self, stage: str, vm: VM | None, ctx: Context) -> None:
        self._hook.rehost_stage_start(stage=stage, vm=vm, ctx=ctx)

    def stage_finish(self, stage: str, vm: VM | None, ctx: Context, result: Any) -> None:
        self._hook.rehost_stage_finish(stage=stage, vm=vm, ctx=ctx, result=result)

    def stage_error(self, stage: str, vm: VM | None, ctx: Context, error: BaseException) -> None:
        self._hook.rehost_stage_error(stage=stage, vm=vm, ctx=ctx, error=error)

    def notify(self, vm: VM, ctx: Context, event: str) -> None:
        self._hook.rehost_notify(vm=vm, ctx=ctx, event=event)

    def vm_stage(self, stage: str, vm: VM, ctx: Context, **extra: Any) -> Result:
        """Perform one per-VM stage through its ``rehost_vm_<stage>`` hook; the answer is
        checked against the stage's result type."""
        caller = getattr(self._hook, f"rehost_vm_{stage}", None)
        if caller is None:
            raise PluginError(f"no hook performs stage {stage!r}")
        answer = self._perform(caller, vm=vm, ctx=ctx, **extra)
        return _stage_result(stage, answer)

    def transfer_progress(self, vm: VM, ctx: Context, path: str, done: int, total: int,
                          seconds: float) -> None:
        self._hook.rehost_transfer_progress(vm=vm, ctx=ctx, path=path, done=done, total=total,
                                            seconds=seconds)

    def rollback_vm(self, vm: VM, ctx: Context) -> Result:
        return _stage_result("rollback", self._perform(self._hook.rehost_rollback_vm, vm=vm,
                                                       ctx=ctx), hook="rehost_rollback_vm")

    def report_template_dirs(self, ctx: Context) -> list[list[str]]:
        result: list[list[str]] = self._hook.rehost_report_template_dirs(ctx=ctx)
        return result

    def report(self, ctx: Context, outdir: str, formats: list[str]) -> list[str]:
        paths: list[str] = []
        for written in self._hook.rehost_report(ctx=ctx, outdir=outdir, formats=formats):
            paths.extend(written or [])
        return paths


R = TypeVar("R", bound=Result)


def _stage_result(stage: str, answer: tuple[str, Any] | None, hook: str = "") -> Result:
    if answer is None:
        raise PluginError(f"no plugin performs stage {stage!r} ({hook or 'rehost_vm_' + stage});"
                          " is a built-in plugin blocked?")
    plugin, value = answer
    return check_result(stage, value, plugin)
