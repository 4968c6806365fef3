"""The plain-libvirt control plane (``[control] strategy = "libvirt"``): hosts with no cloud
platform above them. rehost is the control plane: it selects the VMs on the source hosts,
places each on a target host with the allocation strategy, and defines it there from its saved
XML, adapted to the target (:mod:`.adapt`; every change is recorded and reported).

The disks go through the same stages and guarantees as with Abiquo (preserved as ``X_BACK``,
transferred, verified, ``X_BACK`` kept until ``confirm``). Stages that have nothing to do here
are reported as skipped: ``await_undeployed`` (no platform keeps a record of the VM),
``power_off_new`` (the new domain is defined, never started before its disks are in place) and
``remove_new_disks`` (the definition brings no template disks). The disks keep their paths:
the target's datastore must be at the source's path.

Options (``[control.options]``)::

    vms = { "kvm05" = ["web-*", "db1"], "*" = ["4c1e..."] }   # per source host: names,
                                              # uuids or glob patterns (default: every domain)
    machine = "upgrade"                       # or "keep" (see adapt.py)
"""

from __future__ import annotations

import fnmatch
import re
import threading
from typing import Any

from rehost.api import (
    VM,
    AwaitUndeployedResult,
    BackupXmlResult,
    ConfigError,
    Context,
    ControlPlane,
    DeployResult,
    Finding,
    LocateResult,
    Need,
    PowerOffNewResult,
    PreconditionError,
    PrecopyResult,
    PreserveResult,
    RehostError,
    RollbackResult,
    StartResult,
    StrategyRecord,
    TargetLoad,
    backup_path,
    hookimpl,
    source_host,
)
from rehost.plugins.libvirt.adapt import MACHINE_POLICIES, adapt_domain, parse

#: one placement at a time: a VM placed is defined on its target before the next is placed
_placing = threading.Lock()


class LibvirtControl(ControlPlane):
    name = "libvirt"
    places_vms = False
    deploys_new_disks = False

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        vms = self.options.pop("vms", {})
        if not isinstance(vms, dict) or not all(
                isinstance(v, list) and all(isinstance(p, str) for p in v)
                for v in vms.values()):
            raise ConfigError('control.options.vms: a table of lists of names or patterns, '
                              'e.g. vms = { "kvm05" = ["web-*"] }')
        self.patterns: dict[str, list[str]] = vms
        self.machine = self.options.pop("machine", "upgrade")
        if self.machine not in MACHINE_POLICIES:
            raise ConfigError(f"control.options.machine: choose "
                              f"{' or '.join(MACHINE_POLICIES)}, not {self.machine!r}")
        self.reject_unknown_options()

    # -- which VMs ----------------------------------------------------------------------------

    def _selected(self, host: str, name: str, uuid: str, wanted: str | list[str]) -> bool:
        if wanted != "all" and not {name, uuid} & set(wanted):
            return False
        if not self.patterns:
            return True
        patterns = self.patterns.get(host, []) + self.patterns.get("*", [])
        return any(fnmatch.fnmatchcase(name, p) or p == uuid for p in patterns)

    def select_vms(self, ctx: Context) -> list[VM]:
        """Every domain of a source host that the options select, and every VM the journal
        already knows (a resumed campaign keeps its VMs wherever they are now)."""
        known = {r["name"]: VM.from_dict(r["vm"]) for r in ctx.journal.vm_rows()}
        out = list(known.values())
        for host in ctx.config.sources():
            for d in ctx.hypervisor(host.name).domains():
                if d.name in known or not self._selected(host.name, d.name, d.uuid,
                                                         ctx.config.campaign.vms):
                    continue
                out.append(VM(name=d.name, uuid=d.uuid, label=d.name, source_host=host.name))
        return out

    # -- preflight ----------------------------------------------------------------------------

    def preflight(self, ctx: Context) -> list[Finding]:
        findings: list[Finding] = []
        if not type(ctx.allocation).places():
            findings.append(Finding(
                "critical", "allocation",
                f"allocation strategy {ctx.config.allocation.strategy!r} cannot place VMs "
                "(it only fences a control plane that places them): choose performance or "
                "loadlevel"))
        datastores = {h.datastore for h in ctx.config.sources()}
        for h in ctx.config.targets():
            if h.datastore not in datastores:
                findings.append(Finding(
                    "critical", "datastore-path",
                    f"datastore {h.datastore} is not at the sources' path "
                    f"({', '.join(sorted(datastores))}): the disks keep their paths",
                    host=h.name))
        need_cpu = need_mib = 0
        for vm in ctx.vms:
            if not vm.source_host or vm.fact(DeployResult) is not None:
                continue  # placed already (a resumed campaign): it holds its place there
            saved = ctx.vm_dir(vm) / "domain.xml"
            if vm.fact(BackupXmlResult) is not None and saved.exists():
                # a resumed campaign: the VM may be undefined already; its XML says
                need = self._need_of(saved.read_text())
                cpus, mib = need
            else:
                try:
                    cpus, mib = ctx.hypervisor(vm.source_host).resources(vm.name)
                except RehostError as exc:
                    findings.append(Finding("critical", "vm", f"not on {vm.source_host}: {exc}",
                                            vm=vm.label or vm.name))
                    continue
            need_cpu, need_mib = need_cpu + cpus, need_mib + mib
        loads = self._loads(ctx)
        free_cpu = sum(t.cpus - t.used_cpus for t in loads)
        free_mib = sum(t.memory_mib - t.used_mib for t in loads)
        findings.append(Finding(
            "critical" if need_mib > free_mib else "info", "capacity",
            f"the VMs to move need {need_cpu} CPU and {need_mib} MiB RAM; the target hosts have "
            f"{free_cpu} CPU and {free_mib} MiB free"))
        return findings

    # -- placement ----------------------------------------------------------------------------

    def _loads(self, ctx: Context) -> list[TargetLoad]:
        loads = []
        for h in ctx.config.targets():
            try:
                self.guard_target(ctx, h.name)
                facts = ctx.facts(h.name, refresh=True)
                hv = ctx.hypervisor(h.name)
                used = [hv.resources(d.name) for d in hv.domains()]
            except RehostError as exc:
                ctx.log.warning("{}: not a place for VMs now: {}", h.name, exc)
                continue
            loads.append(TargetLoad(host=h.name, cpus=facts.cpus, memory_mib=facts.memory_mib,
                                    free_bytes=facts.datastore_free_bytes or 0,
                                    used_cpus=sum(c for c, _ in used),
                                    used_mib=sum(m for _, m in used)))
        return loads

    @staticmethod
    def _need_of(xml: str) -> tuple[int, int]:
        """A domain's virtual CPUs and memory in MiB, from its XML."""
        root = parse(xml, "the saved domain XML")
        cpus = int((root.findtext("vcpu") or "1").strip())
        memory = root.find("memory")
        amount = int((memory.text or "0").strip()) if memory is not None else 0
        unit = (memory.get("unit") if memory is not None else None) or "KiB"
        return cpus, amount * _UNITS.get(unit, 1024) // (1 << 20)

    def _need(self, vm: VM, ctx: Context, xml: str) -> Need:
        cpus, mib = self._need_of(xml)
        size = sum(ctx.storage.space_needed(ctx, vm, d) for d in vm.file_disks())
        return Need(cpus=cpus, memory_mib=mib, bytes=size)

    def predict_target(self, vm: VM, ctx: Context) -> str | None:
        """The target ``deploy`` would choose now (the same rules, the same loads); ``deploy``
        keeps it when the VM still fits there (:meth:`_staged_target`)."""
        saved = ctx.vm_dir(vm) / "domain.xml"
        if not saved.exists():
            return None
        with _placing:
            need = self._need(vm, ctx, saved.read_text())
            found: str | None = ctx.allocation.choose_target(vm, ctx, need, self._loads(ctx))
        return found

    @staticmethod
    def _staged_target(vm: VM, ctx: Context, need: Need,
                       loads: list[TargetLoad]) -> str | None:
        """The host the VM's disks were pre-copied to, when it still fits there under the
        allocation rules (the staged copies become its disks: their space counts as free)."""
        pre = vm.fact(PrecopyResult)
        if pre is None or not pre.host or not pre.staged:
            return None
        there = [t for t in loads if t.host == pre.host]
        if not there:
            return None
        staged = sum(s.bytes for s in pre.staged)
        room = there[0].model_copy(update={"free_bytes": there[0].free_bytes + staged})
        found: str | None = ctx.allocation.choose_target(vm, ctx, need, [room])
        return found

    # -- stages -------------------------------------------------------------------------------

    def locate(self, vm: VM, ctx: Context) -> LocateResult:
        host = source_host(vm)
        if ctx.host(host).role != "source":
            raise PreconditionError(f"{vm.name} is on {host}, which is not a source host")
        hv = ctx.hypervisor(host)
        if not hv.exists(vm.name):
            raise PreconditionError(f"{vm.name} is not defined on {host}")
        return LocateResult(host=host, libvirt_state=hv.state(vm.name))

    def await_undeployed(self, vm: VM, ctx: Context) -> AwaitUndeployedResult:
        return AwaitUndeployedResult(skipped="no control plane keeps a record of the VM: "
                                             "undefining it was the whole of it")

    def deploy(self, vm: VM, ctx: Context) -> DeployResult:
        src = source_host(vm)
        sh = ctx.shell(src)
        for disk in vm.file_disks():
            if sh.exists(disk.source or "") or not sh.exists(backup_path(disk)):
                raise PreconditionError(f"{disk.source} is not preserved as "
                                        f"{backup_path(disk)} on {src}: will not define the VM "
                                        "elsewhere")
        saved = (ctx.vm_dir(vm) / "domain.xml").read_text()
        with _placing:
            if vm.target_host and ctx.hypervisor(vm.target_host).exists(vm.name):
                target, how = vm.target_host, "already defined (an earlier run)"
            else:
                need = self._need(vm, ctx, saved)
                loads = self._loads(ctx)
                target = (self._staged_target(vm, ctx, need, loads)
                          or ctx.allocation.choose_target(vm, ctx, need, loads))
                if target is None:
                    raise PreconditionError(
                        f"no target host has room for {vm.name} ({need.cpus} CPU, "
                        f"{need.memory_mib} MiB, {need.bytes >> 20} MiB of disk) under the "
                        f"{ctx.config.allocation.strategy} rules")
                how = f"defined on {target} from the saved XML"
            self.guard_target(ctx, target)
            hv = ctx.hypervisor(target)
            xml, changes = self._adapt(ctx, target, saved)
            (ctx.vm_dir(vm) / "domain-target.xml").write_text(xml)
            if not hv.exists(vm.name):
                hv.define(xml)  # the target refuses what it cannot run: that is the check
            vm.target_host = target
        return DeployResult(host=target, how=how, xml_changes=changes,
                            xml=str(ctx.vm_dir(vm) / "domain-target.xml"))

    def _adapt(self, ctx: Context, target: str, xml: str) -> tuple[str, Any]:
        hv = ctx.hypervisor(target)
        domcaps = None
        if re.search(r"<cpu[\s>]", xml):
            root = parse(xml, "the saved domain XML")
            os_type = root.find("os/type")
            domcaps = hv.domain_capabilities(
                None, (os_type.get("arch") if os_type is not None else None) or "x86_64", None,
                root.get("type") or "qemu")
        return adapt_domain(xml, hv.capabilities(), domcaps, machine_policy=self.machine)

    def power_off_new(self, vm: VM, ctx: Context) -> PowerOffNewResult:
        hv = ctx.hypervisor(vm.target_host or "")
        if hv.state(vm.name) == "running":
            raise PreconditionError(f"{vm.name} runs on {vm.target_host} before its disks are "
                                    "there: someone started it; stop it first")
        return PowerOffNewResult(skipped="the new domain is defined, never started")

    def start(self, vm: VM, ctx: Context) -> StartResult:
        target = vm.target_host or ""
        self.guard_target(ctx, target)
        hv = ctx.hypervisor(target)
        hv.start(vm.name)
        state = hv.state(vm.name)
        if state != "running":
            raise PreconditionError(f"{vm.name} is {state} on {target} after start")
        return StartResult(host=target, libvirt_state=state)

    # -- rollback -----------------------------------------------------------------------------

    def rollback(self, vm: VM, ctx: Context) -> RollbackResult:
        src = vm.source_host
        if not src:
            raise PreconditionError(f"{vm.name} was never located: it is where it was")
        hv = ctx.hypervisor(src)
        if hv.exists(vm.name) and vm.fact(PreserveResult) is None:
            if hv.state(vm.name) != "running":
                hv.start(vm.name)
            return RollbackResult(host=src, steps=["started again on the source host",
                                                   *ctx.storage.discard_staging(vm, ctx)])
        here = vm.target_host if vm.target_host and vm.target_host != src else None
        if here is not None and not ctx.hypervisor(here).exists(vm.name):
            here = None
        if here is not None:
            ctx.hypervisor(here).stop(vm.name)
        steps = ctx.storage.secure_disks(vm, ctx, here)
        if here is not None:
            ctx.hypervisor(here).undefine(vm.name)
            steps.append(f"undefined on {here}")
        if not hv.exists(vm.name):
            hv.define((ctx.vm_dir(vm) / "domain.xml").read_text())
            steps.append(f"defined again on {src} from its saved XML")
        steps += ctx.storage.restore_disks(vm, ctx)
        hv.start(vm.name)
        state = hv.state(vm.name)
        if state != "running":
            raise PreconditionError(f"{vm.name} is {state} on {src} after start")
        disks = ctx.storage.check_restored(vm, ctx)
        if vm.target_host and vm.target_host != src:
            steps += ctx.storage.discard_copies(vm, ctx, vm.target_host)
        else:  # never deployed: what a pre-copy staged is all the move left on the targets
            steps += ctx.storage.discard_staging(vm, ctx)
        vm.target_host = None
        return RollbackResult(host=src, steps=steps, disks=disks, libvirt_state=state)


_UNITS = {"b": 1, "bytes": 1, "KB": 1000, "k": 1024, "KiB": 1024, "MB": 10**6, "M": 1 << 20,
          "MiB": 1 << 20, "GB": 10**9, "G": 1 << 30, "GiB": 1 << 30, "TB": 10**12,
          "T": 1 << 40, "TiB": 1 << 40}


@hookimpl(trylast=True)
def rehost_control_planes() -> list[StrategyRecord]:
    return [StrategyRecord("control", "libvirt",
                           "plain libvirt hosts: rehost places the VMs and defines them on the "
                           "targets from their saved XML, adapted", LibvirtControl)]
