"""``rehost rollback`` with Abiquo: a VM that stopped part-way goes back to its source host,
running on the user's own disks.

Order of work, each step checked before the next:

1. the user's disks are made safe as ``X_BACK`` on the source datastore (renamed there if the
   VM never got that far; renamed back from the target's view of a shared datastore if they
   were already swapped in);
2. a copy deployed elsewhere is powered off and undeployed (only template disks or copies are
   deleted with it);
3. the VM is deployed again, pinned to its source host by temporary 1% load-level rules on
   every other machine (removed again whatever happens);
4. the template disks are removed, ``X_BACK`` renamed back to ``X``, the VM started, and every
   disk compared with the checksum taken when it was preserved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehost.core.errors import PreconditionError
from rehost.hooks import hookimpl
from rehost.plugins.abiquo import DEPLOYED, _abiquo_vm, machine_host
from rehost.plugins.storage.base import backup_path

if TYPE_CHECKING:
    from rehost.core.abiquo import VirtualMachine
    from rehost.core.campaign import Campaign
    from rehost.core.model import VM
    from rehost.core.remote import Shell


@hookimpl(trylast=True)
def rehost_rollback_vm(vm: VM, ctx: Campaign) -> dict[str, Any]:
    src = vm.source_host
    if not src:
        raise PreconditionError(f"{vm.name} was never located: it is where it was")
    client = ctx.abiquo
    limit = ctx.config.campaign.task_timeout
    steps: list[str] = []
    avm = _abiquo_vm(ctx, vm)

    sh = ctx.shell(src)
    preserved = any(sh.exists(backup_path(d)) for d in vm.file_disks())
    # never undefined (and so never preserved): it only needs to run again
    if not preserved and ctx.hypervisor(src).exists(vm.name):
        if avm.state in DEPLOYED:
            if avm.state != "ON":
                client.power_on(avm, timeout=limit)
        elif ctx.hypervisor(src).state(vm.name) != "running":
            ctx.hypervisor(src).start(vm.name)
        return {"host": src, "steps": ["started again on the source host"], "pending": []}

    checksums = _preserved_checksums(vm)
    avm = _undeploy_elsewhere(ctx, vm, avm, sh, steps)
    for disk in vm.file_disks():
        path, back = disk.source or "", backup_path(disk)
        if not sh.exists(back):
            if not sh.exists(path):
                raise PreconditionError(f"neither {path} nor {back} is on {src}: the user's "
                                        "disk is not there; nothing deployed")
            sh.rename(path, back)
            checksums[path] = sh.checksum(back, "sha1"), "sha1"
            steps.append(f"preserved {path} as {back}")
        elif sh.exists(path):
            raise PreconditionError(f"both {path} and {back} are on {src}: will not guess "
                                    "which is the user's")

    _deploy_pinned(ctx, avm, src, steps)
    avm = client.vm(avm)
    if avm.state == "ON":
        client.power_off(avm, timeout=limit)
    owner = None
    for disk in vm.file_disks():
        path, back = disk.source or "", backup_path(disk)
        _check(sh, back, checksums.get(path), src)
        if sh.exists(path):
            st = sh.stat(path)
            owner = f"{st.uid}:{st.gid}"
            sh.remove(path)  # the template the deploy just wrote
        sh.rename(back, path)
        if owner:
            sh.chown(path, owner)
    steps.append("the user's disks are back in place")
    client.power_on(avm, timeout=limit)
    state = ctx.hypervisor(src).state(vm.name)
    if state != "running":
        raise PreconditionError(f"{vm.name} is ON in Abiquo but {state} on {src}")
    disks = []
    for disk in vm.file_disks():
        path = disk.source or ""
        disks.append({"path": path, **_check(sh, path, checksums.get(path), src)})
    vm.target_host = None
    return {"host": src, "steps": steps, "disks": disks, "pending": [],
            "abiquo_state": client.vm(avm).state, "libvirt_state": state}


def _preserved_checksums(vm: VM) -> dict[str, tuple[str, str]]:
    preserved = (vm.facts.get("preserve_disks") or {}).get("disks", [])
    return {d["path"]: (d["checksum"], d["algorithm"]) for d in preserved if d.get("checksum")}


def _check(sh: Shell, path: str, expected: tuple[str, str] | None, host: str) -> dict[str, Any]:
    if expected is None:
        return {"checksum": None}
    digest, algorithm = expected
    got = sh.checksum(path, algorithm)
    if got != digest:
        raise PreconditionError(f"{path} on {host} has {algorithm} {got}, the user's disk had "
                                f"{digest}: stopped before touching it")
    return {"checksum": got, "algorithm": algorithm}


def _undeploy_elsewhere(ctx: Campaign, vm: VM, avm: VirtualMachine, sh: Shell,
                        steps: list[str]) -> VirtualMachine:
    """If the VM is deployed (on a target, or back on the source with a template), power it
    off and undeploy it, after making sure no user disk sits at its disk paths there."""
    client = ctx.abiquo
    limit = ctx.config.campaign.task_timeout
    if avm.state not in DEPLOYED:
        return avm
    here = machine_host(ctx, client.vm_machine(avm))
    if here is not None and here == vm.source_host and not ctx.hypervisor(here).exists(vm.name):
        # undefined, but Abiquo's monitor has not noticed yet: it will
        return client.wait_vm(avm, {"NOT_ALLOCATED"}, timeout=limit)
    if avm.state == "ON":
        client.power_off(avm, timeout=limit)
    other = ctx.shell(here) if here else None
    checksums = _preserved_checksums(vm)
    swapped = "swap_disks" in vm.facts
    for disk in vm.file_disks():
        path, back = disk.source or "", backup_path(disk)
        if sh.exists(back):
            continue  # safe on the source datastore
        if swapped and other is not None and other.exists(path):
            # after swap_disks the new VM's disk is the user's: on a shared datastore it is
            # the only copy, and undeploy would delete it. Keep it as X_BACK first.
            _check(other, path, checksums.get(path), here or "?")
            other.rename(path, back)
            if not sh.exists(back):
                raise PreconditionError(f"{back} is not visible from {vm.source_host}: the "
                                        f"user's disk is only on {here}; nothing undeployed")
            steps.append(f"kept the user's disk as {back} on the shared datastore")
        elif not swapped and sh.exists(path) and not _same_datastore(sh, other, path):
            continue  # never preserved: the user's disk is X on the source host
        else:
            raise PreconditionError(f"the user's disk {path} is not safe on "
                                    f"{vm.source_host}: will not undeploy {vm.name} from {here}")
    client.undeploy(avm, timeout=limit)
    steps.append(f"undeployed from {here}")
    return client.wait_vm(avm, {"NOT_ALLOCATED"}, timeout=limit)


def _same_datastore(sh: Shell, other: Shell | None, path: str) -> bool:
    """Whether two hosts see one file at ``path`` (a shared datastore): a marker written next
    to it on one host is looked for from the other."""
    if other is None:
        return False
    import secrets

    marker = f"{path}.rehost-probe-{secrets.token_hex(4)}"
    sh.write_text(marker, "probe\n")
    try:
        return other.exists(marker)
    finally:
        sh.remove(marker)


def _deploy_pinned(ctx: Campaign, avm: VirtualMachine, src: str, steps: list[str]) -> None:
    client = ctx.abiquo
    others = [m for m in client.machines()
              if machine_host(ctx, m) != src and m.state == "MANAGED"]
    pins = [client.create_load_level_rule(m, cpu=1, ram=1) for m in others]
    try:
        client.deploy(avm, timeout=ctx.config.campaign.task_timeout)
    finally:
        for rule in pins:
            client.delete_load_level_rule(rule)
    landed = machine_host(ctx, client.vm_machine(avm))
    if landed != src:
        raise PreconditionError(f"the deploy landed on {landed}, not on {src}: the user's "
                                f"disks stay as _BACK on {src}")
    steps.append(f"deployed again on {src}")
