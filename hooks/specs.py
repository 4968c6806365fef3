"""Every hook of rehost, with its documentation.

The sections follow what a hook concerns: plugin set-up, registries of strategies, the campaign,
stage events, the per-VM stages, storage, allocation, notification and reports.

Rules (see STYLE.md):

* hooks are called with keyword arguments only, through :class:`rehost.core.plugins.Hooks`;
* a hook that *performs or decides one thing* is ``firstresult``: the first non-``None`` answer
  wins and the rest are not called. Built-in implementations are ``trylast`` so a site plugin
  wins without unregistering anything;
* a hook that *observes* (events, notifications, reports) is called on every plugin, and its
  return values are collected in a list;
* reporters observe: they never change what happened.

``ctx`` is always the campaign, as :class:`rehost.core.types.Context` describes it: the site
config, the journal, the hosts, the plugins' settings and the chosen strategies (``ctx.control``,
``ctx.storage``, ``ctx.allocation``). ``vm`` is a :class:`rehost.core.types.VM`.

Every per-VM stage returns its result type from :mod:`rehost.core.types` (also importable from
:mod:`rehost.api`), or a mapping with its fields; the core checks it before journaling it.

This module imports the types module only.
"""

from __future__ import annotations

from typing import Any

from rehost.core.types import (
    VM,
    AwaitUndeployedResult,
    BackupDisksResult,
    BackupXmlResult,
    CleanupResult,
    Context,
    DeployResult,
    FenceResult,
    Finding,
    Host,
    LocateResult,
    NotifyResult,
    PluginSettings,
    PowerOffNewResult,
    PowerOffResult,
    PrecopyResult,
    PreserveResult,
    RemoveNewDisksResult,
    RollbackResult,
    StartResult,
    StrategyRecord,
    SwapResult,
    TargetLoad,
    TransferResult,
    UndefineResult,
    UnfenceResult,
    VerifyResult,
)
from rehost.hooks import hookspec

# ---------------------------------------------------------------------------------------------
# plugin set-up
# ---------------------------------------------------------------------------------------------


@hookspec
def rehost_configure(ctx: Context) -> None:
    """Called once a command starts working on the campaign (``run``, ``resume``, ``plan``,
    ``confirm``, ``rollback``): before the preflight.

    :param ctx: the campaign.

    A plugin reads its settings (the ``[plugins.<name>]`` table it declared with
    :func:`rehost_plugin_settings`, validated) with ``ctx.settings(name)`` here.

    Example::

        @hookimpl
        def rehost_configure(ctx):
            ctx.log.info("mail goes to {}", ctx.settings("site-mail").relay)
    """


@hookspec
def rehost_unconfigure(ctx: Context) -> None:
    """Called once when the command's work on the campaign ends (after the report), also
    when it failed.

    :param ctx: the campaign.
    """


# ---------------------------------------------------------------------------------------------
# registries: strategies are typed records
# ---------------------------------------------------------------------------------------------


@hookspec
def rehost_storage_strategies() -> list[StrategyRecord]:
    """Offer storage strategies: how the user's disks get from the source to the target host.

    :return: a list of :class:`~rehost.core.model.StrategyRecord` with ``kind="storage"``.
      Each record's ``factory(options)`` returns an instance of
      :class:`rehost.api.StorageStrategy` (a subclass; checked when it is built).

    Names must be unique across all plugins: a duplicate is an error naming both plugins.

    Example::

        @hookimpl
        def rehost_storage_strategies():
            return [StrategyRecord("storage", "nfs", "copy through the NFS filer", NfsCopy)]
    """


@hookspec
def rehost_allocation_strategies() -> list[StrategyRecord]:
    """Offer allocation strategies: how Abiquo is made to send new deploys to the new hosts.

    :return: a list of :class:`~rehost.core.model.StrategyRecord` with ``kind="allocation"``.
      Each record's ``factory(options)`` returns an instance of
      :class:`rehost.api.AllocationStrategy` (``fence``, ``unfence``, and ``choose_target``
      for control planes that let rehost place VMs).

    Example::

        @hookimpl
        def rehost_allocation_strategies():
            return [StrategyRecord("allocation", "tagged", "fence by tags", TagFence)]
    """


@hookspec
def rehost_control_planes() -> list[StrategyRecord]:
    """Offer control planes: the system that owns the VMs (Abiquo; a site's own manager).

    :return: a list of :class:`~rehost.core.types.StrategyRecord` with ``kind="control"``.
      Each record's ``factory(options)`` returns a :class:`rehost.core.strategies.ControlPlane`
      (which VMs move, locate, undefine, await_undeployed, deploy, power, start, the target
      guard, rollback). Chosen with ``[control] strategy`` in the site config.

    Example::

        @hookimpl
        def rehost_control_planes():
            return [StrategyRecord("control", "ovirt", "oVirt engine", OvirtControl)]
    """


@hookspec
def rehost_backup_strategies() -> list[StrategyRecord]:
    """Offer backup strategies: how each file disk of a VM is copied to a backup location
    before the window (the ``backup_disks`` stage, before the power-off).

    :return: a list of :class:`~rehost.core.model.StrategyRecord` with ``kind="backup"``.
      Each record's ``factory(options)`` returns an instance of
      :class:`rehost.api.BackupStrategy` (``preflight``, ``backup``, ``cleanup``). Chosen
      with ``[backup] strategy`` in the site config (``none``, the default: no backup).

    Example::

        @hookimpl
        def rehost_backup_strategies():
            return [StrategyRecord("backup", "snapshot", "a filer snapshot", FilerSnapshot)]
    """


@hookspec
def rehost_plugin_settings() -> list[PluginSettings]:
    """Declare a plugin's own settings: a pydantic model for its ``[plugins.<name>]`` table
    of the site config (or for a top-level section it claims, as ``abiquo`` does ``[abiquo]``).

    The table is validated before anything runs; a wrong value or an unknown key is a
    configuration error naming the key and the plugin. The validated object is
    ``ctx.settings(name)``.

    :return: a list of :class:`~rehost.core.types.PluginSettings`.

    Example::

        class MailSettings(pydantic.BaseModel):
            model_config = pydantic.ConfigDict(extra="forbid")
            relay: str = "localhost"

        @hookimpl
        def rehost_plugin_settings():
            return [PluginSettings("site-mail", MailSettings)]
    """


@hookspec
def rehost_report_formats() -> list[str]:
    """The report formats a reporter writes (``html``, ``md``, ``json`` are built in).
    ``[report] formats`` in the site config and ``rehost report --format`` choose among them.

    Example::

        @hookimpl
        def rehost_report_formats():
            return ["csv"]
    """


# ---------------------------------------------------------------------------------------------
# the campaign
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def rehost_discover_hosts(ctx: Context) -> list[Host] | None:
    """Hosts the control plane knows that the site config does not list (added to the
    campaign as sources or targets). Stops at first non-None result.

    :param ctx: the campaign.
    :return: the hosts found (may be empty).
    """


@hookspec
def rehost_preflight(ctx: Context) -> list[Finding]:
    """Check the campaign before anything changes.

    Every plugin may contribute findings; all are collected. A ``critical`` finding stops the
    run before the fence.

    :param ctx: the campaign.
    :return: a list of :class:`~rehost.core.model.Finding` (may be empty).

    Example::

        @hookimpl
        def rehost_preflight(ctx):
            return [Finding("warning", "friday", "it is Friday")] if is_friday() else []
    """


@hookspec(firstresult=True)
def rehost_select_vms(ctx: Context) -> list[VM] | None:
    """Decide which VMs the campaign moves. Stops at first non-None result.

    :param ctx: the campaign.
    :return: the VMs, or ``None`` to let another plugin decide.
    """


@hookspec(firstresult=True)
def rehost_fence(ctx: Context) -> FenceResult | None:
    """Make the control plane send new deploys to the target hosts only. Stops at first
    non-None result.

    The built-in implementation asks the configured allocation strategy. Whatever is
    returned is journaled and given back to :func:`rehost_unfence`.

    :param ctx: the campaign.
    :return: a :class:`~rehost.core.types.FenceResult` recording what was changed (its own
      facts as extra fields), so it can be restored.
    """


@hookspec(firstresult=True)
def rehost_unfence(ctx: Context, fenced: FenceResult) -> UnfenceResult | None:
    """Put back what :func:`rehost_fence` changed. Stops at first non-None result.

    Runs at the end of every campaign that fenced, also a failed one.

    :param ctx: the campaign.
    :param fenced: what the fence returned.
    :return: an :class:`~rehost.core.types.UnfenceResult` recording what was restored.
    """


@hookspec
def rehost_campaign_start(ctx: Context, vms: list[VM]) -> None:
    """The campaign starts moving VMs (after preflight and fence).

    :param ctx: the campaign.
    :param vms: the VMs it will move, in order.
    """


@hookspec
def rehost_campaign_finish(ctx: Context, outcome: dict[str, str]) -> None:
    """The campaign has ended (after unfence, before the report).

    :param ctx: the campaign.
    :param outcome: each VM's name mapped to ``done``, ``failed`` or ``skipped``.
    """


# ---------------------------------------------------------------------------------------------
# the whole datacenter: evacuation host by host (``rehost run --evacuate``)
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def rehost_host_capacity(ctx: Context, host: str) -> TargetLoad | None:
    """What a host can hold and holds now, as the control plane counts it: the evacuation
    plan fits each wave's VMs into the target hosts with it. Stops at first non-None result.

    The built-in control planes answer: ``libvirt`` from the host's own CPUs (times the
    allocation strategy's ``target_cpu`` percent), memory, datastore and defined domains;
    ``abiquo`` from the Abiquo machine's CPUs and RAM and what Abiquo counts used there.

    :param ctx: the campaign.
    :param host: a host of the site config.
    :return: a :class:`~rehost.core.types.TargetLoad`, or ``None`` to let another plugin
      answer.
    """


@hookspec
def rehost_host_emptied(ctx: Context, host: str, wave: int) -> None:
    """A source host has no VM left (its wave moved them all; the backups were kept or
    deleted as the site says). A site plugin can reinstall it now as CentOS 6 through its own
    provisioning; rehost then waits (``campaign.rejoin_timeout``) for the host to come back,
    checks it and uses it as a target for the next waves. Every plugin is called, at least
    once: when rehost is killed before every implementation returned, ``rehost resume`` calls
    the hook again (an implementation should notice a reinstall it already started).

    :param ctx: the campaign.
    :param host: the host's name in the site config.
    :param wave: the wave that emptied it (1 for the first).
    """


@hookspec
def rehost_host_rejoined(ctx: Context, host: str) -> None:
    """A host emptied by an evacuation came back as CentOS 6 and is a target from now on.
    Every plugin is called (the ``abiquo`` control plane has Abiquo check the machine).

    :param ctx: the campaign.
    :param host: the host's name.
    """


# ---------------------------------------------------------------------------------------------
# stage events: every stage of the campaign and of every VM
# ---------------------------------------------------------------------------------------------


@hookspec
def rehost_stage_start(stage: str, vm: VM | None, ctx: Context) -> None:
    """A stage starts. Observers only.

    :param stage: the stage's name (see :data:`rehost.core.types.VM_STAGES` and
      :data:`~rehost.core.types.CAMPAIGN_STAGES`).
    :param vm: the VM, or ``None`` for a campaign stage.
    :param ctx: the campaign.
    """


@hookspec
def rehost_stage_finish(stage: str, vm: VM | None, ctx: Context, result: Any) -> None:
    """A stage finished successfully. Observers only.

    :param stage: the stage's name.
    :param vm: the VM, or ``None`` for a campaign stage.
    :param ctx: the campaign.
    :param result: what the stage's hook returned, checked: a
      :class:`~rehost.core.types.Result` of the stage's type.
    """


@hookspec
def rehost_stage_error(stage: str, vm: VM | None, ctx: Context, error: BaseException) -> None:
    """A stage failed, or was interrupted (``error`` is then a KeyboardInterrupt or
    SystemExit, or carries ``interrupted = True``). Observers only: the core stops the VM at a
    safe point and goes on with the others.

    :param stage: the stage's name.
    :param vm: the VM, or ``None`` for a campaign stage.
    :param ctx: the campaign.
    :param error: the exception.
    """


# ---------------------------------------------------------------------------------------------
# the per-VM stages: each performs one thing (firstresult). A result of None means "not mine";
# a stage nobody performs is an error. Results are journaled.
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def rehost_vm_locate(vm: VM, ctx: Context) -> LocateResult | None:
    """Confirm which source host runs the VM: the control plane and libvirt must agree.
    Sets ``vm.source_host``. Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_backup_xml(vm: VM, ctx: Context) -> BackupXmlResult | None:
    """Save the domain's XML to the state directory and list its disks into ``vm.disks``.
    Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_backup_disks(vm: VM, ctx: Context) -> BackupDisksResult | None:
    """Before the window, while the VM still runs: copy each file disk to the backup location
    and verify the copy (the built-in implementation asks the configured backup strategy,
    ``[backup] strategy``; with none configured the stage is skipped). A failure stops the VM
    here, before anything changes. Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_precopy(vm: VM, ctx: Context) -> PrecopyResult | None:
    """While the VM still runs: copy its disks to a staging file on the host it is expected to
    land on, so that ``transfer`` sends only what changed once it is off (the built-in
    implementation asks the storage strategy, :meth:`StorageStrategy.precopy`; skipped where
    the strategy does not pre-copy). Nothing the user sees changes. Stops at first non-None
    result."""


@hookspec(firstresult=True)
def rehost_vm_notify(vm: VM, ctx: Context) -> NotifyResult | None:
    """Tell the VM's users that its downtime starts (the built-in implementation calls
    every :func:`rehost_notify` with ``downtime_start``). Stops at first non-None result."""


@hookspec
def rehost_notify(vm: VM, ctx: Context, event: str) -> None:
    """Tell a VM's users what happens to it. Every notifier is called.

    :param vm: the VM concerned.
    :param ctx: the campaign.
    :param event: ``backup_done`` (the ``backup_disks`` stage copied every disk of the VM to
      the backup location: its window starts; not sent when no backup is configured),
      ``downtime_start`` (in the ``notify`` stage, before the power-off),
      ``downtime_end`` (after the ``start`` stage) or ``failed`` (the VM stopped at a safe
      point after a stage failed).

    Example::

        @hookimpl
        def rehost_notify(vm, ctx, event):
            mail(owner_of(vm), f"{vm.label}: {event}")
    """


@hookspec(firstresult=True)
def rehost_vm_power_off(vm: VM, ctx: Context) -> PowerOffResult | None:
    """Power the VM off on its source host: graceful within a time limit, then forced.
    Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_undefine(vm: VM, ctx: Context) -> UndefineResult | None:
    """Undefine the domain on the source host. Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_await_undeployed(vm: VM, ctx: Context) -> AwaitUndeployedResult | None:
    """Wait until the control plane shows the VM undeployed (Abiquo: NOT_ALLOCATED).
    Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_preserve_disks(vm: VM, ctx: Context) -> PreserveResult | None:
    """Rename each file disk ``X`` to ``X_BACK`` on the source datastore, so that the deploy
    cannot overwrite it. Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_deploy(vm: VM, ctx: Context) -> DeployResult | None:
    """Deploy the VM again and check it landed on a target host; sets ``vm.target_host``.
    Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_power_off_new(vm: VM, ctx: Context) -> PowerOffNewResult | None:
    """Power off the freshly deployed VM. Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_transfer(vm: VM, ctx: Context) -> TransferResult | None:
    """Bring every ``X_BACK`` to the target datastore (the storage strategy's work).
    Stops at first non-None result."""


@hookspec
def rehost_transfer_progress(vm: VM, ctx: Context, path: str, done: int, total: int,
                             seconds: float) -> None:
    """A copy is under way: how much of one disk has arrived on the target. Observers only;
    called every few seconds while a copying strategy runs, and once when the disk is done.

    :param vm: the VM whose disk moves.
    :param ctx: the campaign.
    :param path: the disk's path on the target (``X_BACK``).
    :param done: bytes arrived so far.
    :param total: bytes to move for this disk.
    :param seconds: time since this disk's copy started.

    Example::

        @hookimpl
        def rehost_transfer_progress(vm, ctx, path, done, total, seconds):
            print(f"{path}: {100 * done // max(total, 1)}%")
    """


@hookspec(firstresult=True)
def rehost_vm_remove_new_disks(vm: VM, ctx: Context) -> RemoveNewDisksResult | None:
    """Delete the template disks the deploy created on the target. Stops at first non-None
    result."""


@hookspec(firstresult=True)
def rehost_vm_swap_disks(vm: VM, ctx: Context) -> SwapResult | None:
    """Move the user's disks into the new VM's disk paths, owned as the hypervisor expects.
    Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_start(vm: VM, ctx: Context) -> StartResult | None:
    """Start the VM on the target and check it is ON. Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_verify(vm: VM, ctx: Context) -> VerifyResult | None:
    """Check the disks on the target are the user's disks and the domain runs there.
    Stops at first non-None result."""


@hookspec(firstresult=True)
def rehost_vm_cleanup(vm: VM, ctx: Context, delete: bool) -> CleanupResult | None:
    """Delete ``X_BACK`` on the source datastore, only after verify and only when asked.
    Stops at first non-None result.

    :param vm: the VM, verified.
    :param ctx: the campaign.
    :param delete: true when the backups are to be deleted (``--delete-backups``, ``rehost
      confirm``); otherwise the result lists them as ``pending``.
    """


@hookspec(firstresult=True)
def rehost_rollback_vm(vm: VM, ctx: Context) -> RollbackResult | None:
    """Put a VM that stopped part-way back on its source host, running on the user's own
    disks (``rehost rollback``). Stops at first non-None result.

    The built-in implementation asks the control plane (``ControlPlane.rollback``), which
    works through the storage strategy: whatever stage the VM stopped in, the user's disks are
    first made safe under their backup names on the source datastore, then the VM is brought
    back there and its disks checked against what ``preserve_disks`` recorded.

    :param vm: the VM, as the journal knows it (its ``facts`` hold every stage's result).
    :param ctx: the campaign.
    :return: a :class:`~rehost.core.types.RollbackResult`, journaled as the ``rollback``
      stage.

    Example::

        @hookimpl
        def rehost_rollback_vm(vm, ctx):
            return my_control_plane.put_back(vm)
    """


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------


@hookspec
def rehost_report_template_dirs(ctx: Context) -> list[str]:
    """Directories of report templates a plugin brings. Every plugin is asked.

    The built-in reporters look a template up first in the site config's
    ``report.template_dir``, then in these directories (the last registered plugin first),
    then among the built-in templates. A template found here replaces the built-in one of the
    same name, or extends it: ``{% extends "builtin/report.html.j2" %}``.

    :param ctx: the campaign being reported.
    :return: template directories.

    Example::

        @hookimpl
        def rehost_report_template_dirs(ctx):
            return [str(Path(__file__).parent / "templates")]
    """


@hookspec
def rehost_report(ctx: Context, outdir: str, formats: list[str]) -> list[str]:
    """Write the campaign's report. Every reporter is called; reporters observe only.

    :param ctx: the campaign (its journal holds every stage of every VM).
    :param outdir: the directory to write into.
    :param formats: the formats asked for (each one a reporter offers through
      :func:`rehost_report_formats`); a reporter writes those it knows.
    :return: the paths written.
    """
