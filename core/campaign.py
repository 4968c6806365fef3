"""The campaign: what every hook receives as ``ctx``.

It holds the site config, the plugin manager and its typed hook facade, the journal, the chosen
strategies, and cached ways to reach hosts (a :class:`~rehost.core.remote.Shell` and a
:class:`~rehost.core.hypervisor.Hypervisor` per host) and the control plane.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from rehost.core.config import SiteConfig
from rehost.core.errors import ConfigError, RehostError
from rehost.core.journal import Journal
from rehost.core.lock import CampaignLock
from rehost.core.model import VM, Host, HostFacts
from rehost.core.plugins import PluginManager, build_plugin_manager
from rehost.core.remote import Shell

if TYPE_CHECKING:
    from rehost.core.abiquo import AbiquoClient
    from rehost.core.hypervisor import Hypervisor


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
        # choosing a strategy that does not exist is a configuration error: say so before
        # anything is written
        self.manager.strategy("storage", config.storage.strategy)
        self.manager.strategy("allocation", config.allocation.strategy)
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
        self.fenced: dict[str, Any] | None = None
        self.discovered: list[Host] | None = None
        self._lock = threading.RLock()
        self._shells: dict[str, Shell] = {}
        # one ssh connection per host for all of the campaign's commands (ControlMaster);
        # the socket folder is short-named: unix sockets have a path length limit
        self._control_dir: str | None = None
        self.ssh = config.ssh
        if config.ssh.control_dir is None:
            self._control_dir = tempfile.mkdtemp(prefix="rh-ssh-")
            self.ssh = dataclasses.replace(config.ssh, control_dir=self._control_dir)
        self._hypervisors: dict[tuple[str, int], Hypervisor] = {}
        self._facts: dict[str, HostFacts] = {}
        self._abiquo: AbiquoClient | None = None
        self._strategies: dict[str, Any] = {}

    # -- hosts discovered from Abiquo ---------------------------------------------------------

    def discover_hosts(self) -> list[Host]:
        """With ``discover = true`` under [abiquo]: every KVM machine of Abiquo that the site
        config does not name becomes a host, reached by its ip over ssh; its role comes from
        its /etc/redhat-release (CentOS 5: source, CentOS 6: target, else left out)."""
        from rehost.core.hypervisor import parse_centos_release

        found: list[Host] = []
        known = {h.address for h in self.config.hosts.values()}
        for m in self.abiquo.machines():
            if (m.type or "KVM").upper() != "KVM" or not m.ip or m.ip in known:
                continue
            name = m.name or m.ip
            probe = Host(name=name, address=m.ip, datastore="/var/lib/virt")
            self.config.hosts[name] = probe
            try:
                release = self.shell(name).read_text("/etc/redhat-release")
            except RehostError as exc:
                self.log.warning("discover: machine {} ({}) not reachable over ssh: {}", name,
                                 m.ip, exc)
                del self.config.hosts[name]
                self._shells.pop(name, None)
                continue
            major, _ = parse_centos_release(release)
            if major not in (5, 6):
                self.log.warning("discover: machine {} runs {}: neither source nor target",
                                 name, release.strip())
                del self.config.hosts[name]
                continue
            probe.role = "source" if major == 5 else "target"
            found.append(probe)
        return found

    # -- strategies ---------------------------------------------------------------------------

    def strategy(self, kind: str) -> Any:
        """The configured strategy object of a kind (``storage``, ``allocation``)."""
        with self._lock:
            if kind not in self._strategies:
                cfg = {"storage": self.config.storage,
                       "allocation": self.config.allocation}[kind]
                record = self.manager.strategy(kind, cfg.strategy)
                self._strategies[kind] = record.factory(dict(cfg.options))
            return self._strategies[kind]

    @property
    def storage(self) -> Any:
        return self.strategy("storage")

    @property
    def allocation(self) -> Any:
        return self.strategy("allocation")

    # -- hosts --------------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        try:
            return self.config.hosts[name]
        except KeyError:
            raise ConfigError(f"host {name!r} is not in the site config "
                              f"(known: {', '.join(sorted(self.config.hosts))})") from None

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
        """A libvirt connection to a host, one per host and thread."""
        from rehost.core.hypervisor import Hypervisor

        key = (host, threading.get_ident())
        with self._lock:
            if key not in self._hypervisors:
                h = self.host(host)
                uri = h.uri or self._ssh_uri(h)
                self._hypervisors[key] = Hypervisor(uri, name=h.name)
            return self._hypervisors[key]

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
        with self._lock:
            if refresh or host not in self._facts:
                h = self.host(host)
                self._facts[host] = self.hypervisor(host).facts(self.shell(host), h.datastore)
            return self._facts[host]

    # -- control plane ------------------------------------------------------------------------

    @property
    def abiquo(self) -> AbiquoClient:
        from rehost.core.abiquo import AbiquoClient

        with self._lock:
            if self._abiquo is None:
                a = self.config.abiquo
                if a is None:
                    raise ConfigError("this campaign needs an [abiquo] section in the site "
                                      "config")
                self._abiquo = AbiquoClient(
                    a.url, a.user, a.password(), version=a.version,
                    verify_tls=(a.ca_file or True) if a.verify_tls else False,
                    timeout=a.timeout, task_timeout=self.config.campaign.task_timeout)
            return self._abiquo

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
