"""The emulator's behaviour: deploy, undeploy, power, machine states, the task workers and the
virtual system monitor. The HTTP layer (:mod:`.server`) only translates requests to these calls.

As Abiquo 2.0's sources do it (docs/abiquo-api.md has the sources):
- deploying a VM that is not ``NOT_ALLOCATED`` (a ``LOCKED`` one too) is ``409 VM-7``;
  undeploying a ``LOCKED`` VM ``409 VM-12``; undeploying a VM that is not on its hypervisor
  (not ON, OFF, PAUSED or CONFIGURED) is accepted with nothing to do: ``202`` with a link to
  ``.../tasks/untraceable``; undeploying a captured VM without ``forceUndeploy`` ``409 VM-44``;
- a power state other than ON, OFF, PAUSED is ``400 VM-10``; powering a VM that is not on
  its hypervisor (``LOCKED`` too) ``409 VM-11``; a change the state machine does not allow
  (``OFF`` to ``OFF``, ``CONFIGURED`` to ``OFF``) ``409 VM-4``;
- a machine's state changes only to or from ``HALTED`` (other changes are ignored);
- when a captured VM's domain vanishes, its record is deleted (not set NOT_ALLOCATED).

Choices where real Abiquo's 2.4/2.6 behaviour is not known:
- the allocation runs inside the deploy request, as in Abiquo 2.0's API: no suitable machine
  is a ``409`` with code ``ALLOC-0`` and the VM stays ``NOT_ALLOCATED`` (no task is created);
- a ``HALTED`` machine receives no deploy and refuses undeploys of its VMs (``409 VM-4``);
  power actions still work there (they go to the hypervisor, not the allocator);
- leaving ``HALTED`` for ``MANAGED`` checks the hypervisor: unreachable, it is ``STOPPED``;
- power ``OFF`` is a hard power-off (``virDomainDestroy``), as Abiquo 2.x's OFF is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from loguru import logger

from rehost.lab.emulator import agent, store
from rehost.lab.emulator.inventory import DEPLOYED, VM, Inventory, Task
from rehost.lab.emulator.scheduler import NoMachine, choose_machine
from rehost.lab.lab import LabState

#: the power changes Abiquo allows (2.0's VirtualMachineStateTransition)
TRANSITIONS = frozenset({("CONFIGURED", "ON"), ("OFF", "ON"), ("ON", "OFF"), ("ON", "PAUSED"),
                         ("PAUSED", "ON")})


class ApiError(Exception):
    """An answer with Abiquo's error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Emulator:
    def __init__(self, lab: LabState, base: str = "", monitor_interval: float = 0.5,
                 workers: int = 4, profile: str | None = None,
                 state_file: Path | None = None) -> None:
        self.lab = lab
        self.inv = Inventory(lab, base, profile)
        #: where the state is kept across a restart (:mod:`.store`); None: in memory only
        self.state_file = state_file
        self.profile = self.inv.profile
        self.monitor_interval = monitor_interval
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="abq-task")
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._monitor_loop, name="abq-monitor",
                                         daemon=True)

    def start(self) -> None:
        if self.state_file is not None:
            store.load(self.inv, self.state_file)
        self.discover()
        self.persist()
        self._monitor.start()

    def persist(self) -> None:
        """Write the state to the state file (after each change)."""
        if self.state_file is not None:
            store.save(self.inv, self.state_file)

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=False)
        if self._monitor.is_alive():
            self._monitor.join(timeout=5)

    def discover(self) -> None:
        """Where each VM runs now, as the hosts say (Abiquo's database after a restart)."""
        found: dict[str, tuple[str, str]] = {}
        for m in self.inv.machines.values():
            try:
                for name, state in agent.domains(self.lab, m.host).items():
                    found[name] = (m.host, state)
            except agent.AgentError as exc:
                logger.warning("emulator: {}", exc)
        with self.inv.lock:
            for vm in self.inv.vms.values():
                if vm.name in found:
                    host, state = found[vm.name]
                    vm.machine = self.inv.machine_by_host(host).id
                    vm.state = "CONFIGURED" if vm.configured and state == "OFF" else state
                else:
                    vm.machine, vm.state = None, "NOT_ALLOCATED"

    # -- lookups --------------------------------------------------------------------------------

    def vm(self, vm_id: int) -> VM:
        vm = self.inv.vms.get(vm_id)
        if vm is None:
            raise ApiError(404, "VM-1", "The requested virtual machine does not exist")
        return vm

    # -- virtual machine actions ----------------------------------------------------------------

    def deploy(self, vm_id: int) -> Task:
        with self.inv.lock:
            vm = self.vm(vm_id)
            if vm.state != "NOT_ALLOCATED":
                raise ApiError(409, "VM-7", "The allowed state for deploying Virtual Machines "
                               f"is NOT_ALLOCATED ({vm.name} is {vm.state})")
            try:
                machine = choose_machine(self.inv, vm)
            except NoMachine as exc:
                raise ApiError(409, "ALLOC-0", "There are not enough resources to create the "
                               f"virtual machine {vm.name}: {exc}") from exc
            vm.machine, vm.state = machine.id, "LOCKED"
            task = self.inv.new_task(vm, "DEPLOY", ["CONFIGURE", "POWER_ON"])
            vm.configured = False
            host = machine.host
            logger.info("emulator: deploying {} on {}", vm.name, host)

        def work() -> None:
            agent.deploy(self.lab, host, vm.name, vm.uuid, vm.ram, vm.cpu, vm.disks, vm.volume)

        def failed() -> None:
            try:
                agent.undeploy(self.lab, host, vm.name, [])
            except agent.AgentError as exc:
                logger.warning("emulator: cleaning up a failed deploy: {}", exc)
            vm.machine = None

        self._run(task, vm, work, "ON", "NOT_ALLOCATED", failed)
        return task

    def undeploy(self, vm_id: int, force: bool = False) -> Task | None:
        """The undeploy's task; None when there is nothing to undeploy (untraceable)."""
        with self.inv.lock:
            vm = self.vm(vm_id)
            if vm.state == "LOCKED":
                raise ApiError(409, "VM-12", "The allowed power states for Virtual Machine "
                               "deployment are ON, OFF, PAUSED, UNKNOWN  or ALLOCATED "
                               f"({vm.name} is {vm.state})")
            if vm.state not in DEPLOYED or vm.machine is None:
                return None
            if vm.captured and not force:
                raise ApiError(409, "VM-44", "You are trying to undeploy an imported virtual "
                               "machine. If you undeploy it, the virtual machine template "
                               "cannot be recovered. If you are confident of this action, "
                               "please call this functionality again with the "
                               "'forceUndeploy=true' option")
            machine = self.inv.machines[vm.machine]
            if machine.state != "MANAGED":
                raise ApiError(409, "VM-4", "The virtual machine cannot change to the required "
                               f"state: its machine {machine.name} is {machine.state}")
            before = vm.state
            vm.state = "LOCKED"
            task = self.inv.new_task(vm, "UNDEPLOY", ["POWER_OFF", "DECONFIGURE"])
            host = machine.host

        def work() -> None:
            agent.undeploy(self.lab, host, vm.name, vm.disks)

        def done() -> None:
            vm.machine = None
            if vm.captured:
                self.inv.vms.pop(vm.id, None)

        self._run(task, vm, work, "NOT_ALLOCATED", before, None, done)
        return task

    def set_state(self, vm_id: int, state: str) -> Task:
        if state not in ("ON", "OFF", "PAUSED"):
            raise ApiError(400, "VM-10", "The Virtual Machine is in a state that does not "
                           f"allow the request, therefore it cannot be modified ({state!r}: "
                           "choose ON, OFF or PAUSED)")
        with self.inv.lock:
            vm = self.vm(vm_id)
            if vm.state not in DEPLOYED or vm.machine is None:
                raise ApiError(409, "VM-11", "The Virtual Machine is not in any Hypervisor. "
                               "Therefore the change of state cannot be applied")
            if (vm.state, state) not in TRANSITIONS:
                raise ApiError(409, "VM-4", "The virtual machine cannot change to the required "
                               f"state ({vm.state} to {state})")
            before = vm.state
            vm.state = "LOCKED"
            kind = {"ON": "POWER_ON", "OFF": "POWER_OFF", "PAUSED": "PAUSE"}[state]
            task = self.inv.new_task(vm, kind, [kind])
            host = self.inv.machines[vm.machine].host

        def work() -> None:
            agent.set_power(self.lab, host, vm.name, state)

        self._run(task, vm, work, state, before)
        return task

    def _run(self, task: Task, vm: VM, work: Callable[[], None], ok_state: str,
             fail_state: str, on_fail: Callable[[], None] | None = None,
             on_ok: Callable[[], None] | None = None) -> None:
        """Run a task's work in a worker thread; the VM stays LOCKED until it ends."""

        def run() -> None:
            with self.inv.lock:
                task.state = "STARTED"
                for j in task.jobs:
                    j["state"] = "STARTED"
            try:
                work()
            except Exception as exc:  # any failure fails the task
                logger.error("emulator: task {} {} of {} failed: {}", task.type, task.id,
                             vm.name, exc)
                with self.inv.lock:
                    if on_fail:
                        on_fail()
                    vm.state = fail_state
                    self.inv.generation += 1
                    task.state = "FINISHED_UNSUCCESSFULLY"
                    for j in task.jobs:
                        j["state"] = "FAILED"
                        j["description"] = f"{j['type'].lower()}: {exc}"
                self.persist()
                return
            with self.inv.lock:
                if on_ok:
                    on_ok()
                vm.state = ok_state
                self.inv.generation += 1
                task.state = "FINISHED_SUCCESSFULLY"
                for j in task.jobs:
                    j["state"] = "DONE"
            self.persist()

        self._pool.submit(run)

    # -- machines -------------------------------------------------------------------------------

    def set_machine_state(self, machine_id: int, state: str) -> None:
        """A machine PUT's state: applied only to or from HALTED (Abiquo 2.0's
        MachineService.modifyMachine), else ignored."""
        with self.inv.lock:
            m = self.inv.machines.get(machine_id)
            if m is None:
                raise ApiError(404, "MACHINE-0", "The requested machine does not exist")
            if state == m.state or "HALTED" not in (state, m.state):
                return
            leaving = m.state == "HALTED"
        # leaving HALTED for MANAGED checks the hypervisor first
        if leaving and state == "MANAGED" and not agent.reachable(self.lab, m.host):
            state = "STOPPED"
        with self.inv.lock:
            m.state = state

    def check_machine_state(self, machine_id: int) -> str:
        m = self.inv.machines.get(machine_id)
        if m is None:
            raise ApiError(404, "MACHINE-0", "The requested machine does not exist")
        if not agent.reachable(self.lab, m.host):
            return "STOPPED"
        return m.state

    # -- the virtual system monitor -------------------------------------------------------------

    def _monitor_loop(self) -> None:
        while not self._stop.wait(self.monitor_interval):
            try:
                self.monitor_once()
            except Exception as exc:  # the monitor must keep watching
                logger.warning("emulator: monitor: {}", exc)

    def monitor_once(self) -> None:
        """A deployed VM whose domain vanished is NOT_ALLOCATED (a DESTROYED event); one whose
        domain is found off, paused or running shows OFF, PAUSED or ON."""
        with self.inv.lock:
            generation = self.inv.generation
            watched = [(vm, vm.machine, vm.state) for vm in self.inv.vms.values()
                       if vm.state in DEPLOYED and vm.machine is not None]
        seen: dict[int, dict[str, str] | None] = {}
        changed = False
        for vm, machine_id, state in watched:
            if machine_id not in seen:
                host = self.inv.machines[machine_id].host
                try:
                    seen[machine_id] = agent.domains(self.lab, host)
                except agent.AgentError:
                    seen[machine_id] = None  # unreachable host: states stay as they are
            doms = seen[machine_id]
            if doms is None:
                continue
            now = doms.get(vm.name)
            with self.inv.lock:
                if (vm.state != state or vm.machine != machine_id
                        or self.inv.generation != generation):
                    continue  # an action or another event got there first
                if now is None and vm.captured:
                    # Abiquo 2.0's VSMEventProcessor: a captured VM's record is deleted
                    logger.info("emulator: monitor: captured VM {} vanished from {}: its "
                                "record is deleted", vm.name,
                                self.inv.machines[machine_id].name)
                    self.inv.vms.pop(vm.id, None)
                elif now is None:
                    logger.info("emulator: monitor: {} vanished from {}: NOT_ALLOCATED",
                                vm.name, self.inv.machines[machine_id].name)
                    vm.state, vm.machine = "NOT_ALLOCATED", None
                elif now == "OFF" and state == "CONFIGURED":
                    continue  # defined and off: still CONFIGURED
                elif now != state:
                    logger.info("emulator: monitor: {} is {} (was {})", vm.name, now, state)
                    vm.state = now
                else:
                    continue
                changed = True
        if changed:
            self.persist()
