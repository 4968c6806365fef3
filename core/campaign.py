"""The campaign: what every hook receives as ``ctx``.

It holds the site config, the plugin manager and its typed hook facade, the plugins' validated
settings, the journal, the chosen strategies (control plane, storage, allocation), and cached
ways to reach hosts (a :class:`~rehost.core.remote.Shell` and a
:class:`~rehost.core.hypervisor.Hypervisor` per host). Plugins see it as
:class:`rehost.core.types.Context`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from rehost.core.config import SiteConfig, StrategyConfig, validate_plugin_settings
from rehost.core.errors import ConfigError
from rehost.core.journal import Journal
from rehost.core.lock import CampaignLock
from rehost.core.model import VM, Host, HostFacts
from rehost.core.plugins import PluginManager, build_plugin_manager
from rehost.core.remote import Shell
from rehost.core.types import FenceResult

if TYPE_CHECKING:
    from rehost.core.hypervisor import Hypervisor
    from rehost.core.strategies import (
        AllocationStrategy,
        BackupStrategy,
        ControlPlane,
        StorageStrategy,
    )


def _sweep_control_dirs() -> None:
    """Remove the ssh socket folders of rehost processes that died without cleaning up
    (``rh-ssh-<pid>-*`` whose process is gone)."""
    for d in Path(tempfile.gettempdir()).glob("rh-ssh-*-*"):
        pid = d.name.split("-")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue  # someone else's, alive


class Campaign:
    """One migration campaign (one site config, one state directory)."""

    def __init__(
        self,
        config: SiteConfig,
        manager: PluginManager | None = None,
        *,
        dry_run: bool = False,
        extra_plugins: list[tuple[object, str]] | None = None,
        exclusive: str | None = None,
    ) -> None:
        """``exclusive``: the command about to change things (``rehost run``, ...); it takes
        the campaign's lock first and raises CampaignBusy while another process holds it."""
        self.config = config
        self.manager = manager or build_plugin_manager(
            block=config.plugins.block, plugin_files=config.plugins.files,
            extra=extra_plugins or [],
        )
        self.hooks = self.manager.hooks
        self.dry_run = dry_run
        # a strategy that does not exist, a plugin setting or a report format that is wrong:
        # configuration errors, said before anything is written
        for kind in ("control", "storage", "allocation", "backup"):
            self.manager.strategy(kind, self._strategy_config(kind).strategy)
        self._settings = validate_plugin_settings(
            config, self.manager.settings_specs(), [i.name for i in self.manager.listing()])
        formats = self.hooks.report_formats()
        for f in config.report.formats:
            if f not in formats:
                raise ConfigError(f"report.formats: {f!r} is not a format: choose "
                                  f"{', '.join(formats) or '(no reporter is installed)'}")
        self.lock: CampaignLock | None = None
        if exclusive:
            self.lock = CampaignLock(config.state_dir, config.campaign.name, exclusive)
            self.lock.acquire()
        try:
            self.journal = Journal(config.state_dir)
        except BaseException:
            if self.lock:
                self.lock.release()
            raise
        self.log = logger.bind(campaign=config.campaign.name)
        # for machines: every log record of this campaign as a JSON line in the state dir
        self._log_sink = logger.add(str(self.state_dir / "rehost.log.jsonl"), serialize=True,
                                    level="DEBUG", enqueue=False)
        self.vms: list[VM] = []
        self.fenced: FenceResult | None = None
        self.discovered: list[Host] | None = None
        #: set on the first Ctrl-C or SIGTERM: no new stage starts
        self.stopping = threading.Event()
        #: the signal that stopped the campaign, if one did
        self.stopped_by: signal.Signals | None = None
        #: a fault of a host or of the control plane that holds the VMs not yet taken down
        self.fault: str | None = None
        #: why the unfence failed, if it did: the fence is still up (``resume`` retries it)
        self.unfence_error: str | None = None
        self._lock = threading.RLock()
        self._shells: dict[str, Shell] = {}
        # one ssh connection per host for all of the campaign's commands (ControlMaster);
        # the socket folder is short-named: unix sockets have a path length limit
        self._control_dir: str | None = None
        self.ssh = config.ssh
        if config.ssh.control_dir is None:
            _sweep_control_dirs()
            self._control_dir = tempfile.mkdtemp(prefix=f"rh-ssh-{os.getpid()}-")
            self.ssh = dataclasses.replace(config.ssh, control_dir=self._control_dir)
        self._hypervisors: dict[tuple[str, int], Hypervisor] = {}
        #: the thread each connection belongs to (a thread that ended leaves it to another)
        self._hv_threads: dict[tuple[str, int], threading.Thread] = {}
        self._facts: dict[str, HostFacts] = {}
        #: one lock per host: the facts of several hosts are read at once, each host once
        self._facts_locks: dict[str, threading.Lock] = {}
        self._strategies: dict[str, Any] = {}

    def note_fence(self, record: FenceResult) -> None:
        """Journal the fence as far as it got, before each change it makes: a campaign
        killed in the middle of its fence then leaves the record its unfence needs (a fence's
        ``record`` may name a change not made yet; the unfence undoes what exists)."""
        self.journal.set("fenced", record.model_dump(mode="json"))
        self.journal.set("unfenced", None)

    # -- plugins' settings and strategies ----------------------------------------------------

    def settings(self, plugin: str) -> Any:
        """A plugin's validated settings (``None`` when it declared none, or its table is
        absent and the plugin has no defaults)."""
        return self._settings.get(plugin)

    def secrets(self) -> list[str]:
        """Values no report, log or journal may show (the plugins' settings say which)."""
        out: list[str] = []
        for spec in self.manager.settings_specs():
            value = self._settings.get(spec.plugin)
            if value is not None and spec.secrets is not None:
                out.extend(s for s in spec.secrets(value) if s)
        return out

    def _strategy_config(self, kind: str) -> StrategyConfig:
        return {"storage": self.config.storage, "allocation": self.config.allocation,
                "control": self.config.control, "backup": self.config.backup}[kind]

    def strategy(self, kind: str) -> Any:
        """The configured strategy object of a kind (``control``, ``storage``,
        ``allocation``, ``backup``), built once."""
        with self._lock:
            if kind not in self._strategies:
                cfg = self._strategy_config(kind)
                self._strategies[kind] = self.manager.build_strategy(kind, cfg.strategy,
                                                                     cfg.options)
            return self._strategies[kind]

    @property
    def control(self) -> ControlPlane:
        control: ControlPlane = self.strategy("control")
        return control

    @property
    def storage(self) -> StorageStrategy:
        storage: StorageStrategy = self.strategy("storage")
        return storage

    @property
    def allocation(self) -> AllocationStrategy:
        allocation: AllocationStrategy = self.strategy("allocation")
        return allocation

    @property
    def backup(self) -> BackupStrategy:
        backup: BackupStrategy = self.strategy("backup")
        return backup

    # -- hosts --------------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        try:
            return self.config.hosts[name]
        except KeyError:
            raise ConfigError(f"host {name!r} is not in the site config "
                              f"(known: {', '.join(sorted(self.config.hosts))})") from None

    def add_host(self, host: Host) -> None:
        """A host the control plane found (discovery)."""
        with self._lock:
            self.config.hosts[host.name] = host

    def reconnect(self, name: str) -> None:
        """Drop what is kept about a host (its shell, facts and libvirt connections): it was
        reinstalled or rebooted, and the next use connects afresh."""
        with self._lock:
            self._shells.pop(name, None)
            self._facts.pop(name, None)
            for key in [k for k in self._hypervisors if k[0] == name]:
                hv = self._hypervisors.pop(key)
                getattr(self, "_hv_threads", {}).pop(key, None)
                try:
                    hv.close()
                except Exception as exc:  # a dead connection may not close cleanly
                    self.log.debug("{}: closing an old libvirt connection: {}", name, exc)

    def forget_host(self, name: str) -> None:
        with self._lock:
            self.config.hosts.pop(name, None)
            self._shells.pop(name, None)
            self._facts.pop(name, None)

    def host_by_address(self, address: str) -> Host | None:
        for h in self.config.hosts.values():
            if h.address == address or h.name == address:
                return h
        return None

    def shell(self, host: str) -> Shell:
        with self._lock:
            if host not in self._shells:
                h = self.host(host)
                self._shells[host] = Shell(h.address, user=h.ssh_user, port=h.ssh_port,
                                           ssh=self.ssh, name=h.name)
            return self._shells[host]

    def hypervisor(self, host: str) -> Hypervisor:
        """A libvirt connection to a host, one per host and thread. A thread that has none
        takes over the connection a thread that has ended left (the preflight reads its hosts
        from short-lived threads, at once; opening a connection is the slow part), else opens
        its own."""
        from rehost.core.hypervisor import Hypervisor

        me = threading.current_thread()
        key = (host, me.ident or 0)
        with self._lock:
            if key not in self._hypervisors:
                left = self._left_behind(host)
                if left is None:
                    h = self.host(host)
                    uri = h.uri or self._ssh_uri(h)
                    left = Hypervisor(uri, name=h.name)
                self._hypervisors[key] = left
            self._hv_threads[key] = me  # (a thread id is reused once its thread has ended)
            return self._hypervisors[key]

    def _left_behind(self, host: str) -> Hypervisor | None:
        """A connection to ``host`` whose thread has ended, taken off its old key."""
        for key, thread in list(self._hv_threads.items()):
            if key[0] == host and not thread.is_alive():
                del self._hv_threads[key]
                return self._hypervisors.pop(key)
        return None

    def _ssh_uri(self, h: Host) -> str:
        """qemu+ssh with the campaign's ssh settings: libvirt's ssh transport takes no
        ssh_config, so it runs a small ssh wrapper that adds them (and shares the
        campaign's connection to the host)."""
        uri = h.libvirt_uri()
        options = self.ssh.argv()
        if not options or self._control_dir is None:
            return uri
        wrapper = Path(self._control_dir) / "ssh"
        if not wrapper.exists():
            from rehost.core.remote import quote_argv

            wrapper.write_text(f'#!/bin/sh\nexec {quote_argv(["ssh", *options])} "$@"\n')
            wrapper.chmod(0o700)
        return f"{uri}&command={wrapper}"

    def facts(self, host: str, refresh: bool = False) -> HostFacts:
        """What ``host`` says about itself (libvirt and one ssh command, at once), read once
        and kept; ``refresh`` reads it again. Threads may ask for several hosts at once."""
        with self._lock:
            if not refresh and host in self._facts:
                return self._facts[host]
            lock = self._facts_locks.setdefault(host, threading.Lock())
        with lock:
            with self._lock:
                if not refresh and host in self._facts:
                    return self._facts[host]  # another thread read it meanwhile
            h = self.host(host)
            found = self.hypervisor(host).facts(self.shell(host), h.datastore)
            with self._lock:
                self._facts[host] = found
            return found

    # -- files --------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    def vm_dir(self, vm: VM) -> Path:
        d = self.state_dir / "vms" / vm.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def close(self) -> None:
        with self._lock:
            for hv in self._hypervisors.values():
                hv.close()
            self._hypervisors.clear()
            self._hv_threads.clear()
            for shell in self._shells.values():
                try:
                    shell.close()
                except Exception as exc:  # a lingering master ends by itself (ControlPersist)
                    self.log.debug("ssh to {}: {}", shell.name, exc)
            self._shells.clear()
            if self._control_dir:
                shutil.rmtree(self._control_dir, ignore_errors=True)
        self.journal.close()
        try:
            logger.remove(self._log_sink)
        except ValueError:
            pass
        if self.lock:
            self.lock.release()
