"""rehost's public API for plugin authors: everything a site plugin (and every built-in
plugin) needs, in one import.

::

    from rehost.api import DatastoreStrategy, StrategyRecord, TransferResult, hookimpl

What is here, and only what is here, is the contract; the rest of the ``rehost`` package may
change. ``docs/plugin-guide.md`` walks through a storage strategy, a notifier and a reporter.

* the hook marker: :data:`hookimpl` (every hook is documented in ``rehost.hooks.specs``);
* the things rehost moves: :class:`VM`, :class:`Disk`, :class:`Host`, :class:`HostFacts`,
  :class:`Finding`, and the stages :data:`VM_STAGES`, :data:`CAMPAIGN_STAGES`;
* what each stage returns (:class:`LocateResult` ... :class:`RollbackResult`), the records
  they hold, and :class:`Context` (what ``ctx`` offers);
* the strategy kinds (:class:`StorageStrategy`, :class:`AllocationStrategy`,
  :class:`ControlPlane`, :class:`BackupStrategy`), offered as :class:`StrategyRecord`; a
  plugin's own settings as :class:`PluginSettings`;
* for file disks on datastores: :class:`DatastoreStrategy` and its helpers
  (:func:`backup_path`, :func:`source_host`, :func:`target_host`, :func:`shell_safe`,
  :func:`same_datastore`);
* remote commands: :class:`Shell` (argument lists, quoted for the remote shell) and
  :func:`quote_argv`; :func:`parse_centos_release` for ``/etc/redhat-release``;
* errors: :class:`RehostError` and its kinds.
"""

from __future__ import annotations

from rehost.api.datastore import (
    BACK_SUFFIX,
    DIGEST_PY,
    PY_LAUNCH,
    STAGING_SUFFIX,
    DatastoreStrategy,
    backup_path,
    same_datastore,
    shell_safe,
    source_host,
    staging_path,
    target_host,
)
from rehost.core.errors import (
    ConfigError,
    ControlPlaneError,
    HypervisorError,
    PluginError,
    PreconditionError,
    RehostError,
    RemoteError,
)
from rehost.core.hypervisor import parse_centos_release
from rehost.core.remote import Shell, quote_argv
from rehost.core.strategies import (
    AllocationStrategy,
    BackupStrategy,
    ControlPlane,
    StorageStrategy,
    Strategy,
)
from rehost.core.types import (
    CAMPAIGN_STAGES,
    VM,
    VM_STAGES,
    AwaitUndeployedResult,
    BackupDisksResult,
    BackupXmlResult,
    CleanupResult,
    Context,
    DeployResult,
    Disk,
    DiskBackup,
    DiskCheck,
    FenceResult,
    Finding,
    Host,
    HostFacts,
    LocateResult,
    Need,
    NotifyResult,
    PluginSettings,
    PowerOffNewResult,
    PowerOffResult,
    PrecopyResult,
    PreservedDisk,
    PreserveResult,
    RemovedDisk,
    RemoveNewDisksResult,
    Result,
    RollbackResult,
    Sample,
    StagedDisk,
    StartResult,
    StrategyRecord,
    SwappedDisk,
    SwapResult,
    TargetLoad,
    TransferResult,
    UndefineResult,
    UnfenceResult,
    VerifyResult,
    XmlChange,
)
from rehost.hooks import hookimpl

__all__ = [
    "BACK_SUFFIX", "CAMPAIGN_STAGES", "DIGEST_PY", "PY_LAUNCH", "STAGING_SUFFIX", "VM",
    "VM_STAGES", "AllocationStrategy",
    "AwaitUndeployedResult", "BackupDisksResult", "BackupStrategy", "BackupXmlResult",
    "CleanupResult",
    "ConfigError", "Context", "ControlPlane", "ControlPlaneError", "DatastoreStrategy",
    "DeployResult", "Disk", "DiskBackup", "DiskCheck", "FenceResult", "Finding", "Host",
    "HostFacts", "HypervisorError", "LocateResult", "Need", "NotifyResult", "PluginError",
    "PluginSettings", "PowerOffNewResult", "PowerOffResult", "PreconditionError", "PrecopyResult",
    "PreserveResult", "PreservedDisk", "RehostError", "RemoteError", "RemoveNewDisksResult",
    "RemovedDisk", "Result", "RollbackResult", "Sample", "Shell", "StagedDisk", "StartResult",
    "StorageStrategy", "Strategy", "StrategyRecord", "SwapResult", "SwappedDisk", "TargetLoad",
    "TransferResult", "UndefineResult", "UnfenceResult", "VerifyResult", "XmlChange",
    "backup_path", "hookimpl", "parse_centos_release", "quote_argv", "same_datastore",
    "shell_safe", "source_host", "staging_path", "target_host",
]
