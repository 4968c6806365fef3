"""rehost's exceptions. Each says what failed and where, in words an operator can act on."""

from __future__ import annotations


class RehostError(Exception):
    """Base of every error rehost raises on purpose."""

    exit_code = 1


class ConfigError(RehostError):
    """Bad usage or bad configuration (exit code 2)."""

    exit_code = 2


class PluginError(RehostError):
    """A plugin is broken, missing or in conflict with another (exit code 2)."""

    exit_code = 2


class RemoteError(RehostError):
    """A command on a host failed. Carries the host, the command, its exit code and output."""

    def __init__(
        self,
        host: str,
        argv: list[str],
        message: str,
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        self.host = host
        self.argv = list(argv)
        self.exit_code_remote = exit_code
        self.stdout = stdout
        self.stderr = stderr
        shown = " ".join(argv)
        if len(shown) > 300:
            shown = shown[:300] + "..."
        detail = f": {stderr.strip()[-500:]}" if stderr.strip() else ""
        super().__init__(f"on {host}: `{shown}` {message}{detail}")


class DatastoreFull(RemoteError):
    """A copy failed on a target host whose datastore has no room left for it."""

    def __init__(self, host: str, datastore: str, free: int, needed: int,
                 cause: BaseException) -> None:
        RehostError.__init__(
            self, f"No space left on device on {host}: its datastore {datastore} has "
                  f"{free >> 20} MiB free, the VM's disks need {needed >> 20} MiB; make room "
                  f"there (or use another target), then `rehost resume` ({cause})")
        self.host = host
        self.argv = []
        self.exit_code_remote = None
        self.stdout = self.stderr = ""


class HypervisorError(RehostError):
    """libvirt refused or failed; the message names the host (URI) and the domain."""


class PreconditionError(RehostError):
    """A stage refused to act because its precondition does not hold (nothing was changed)."""


class LabError(RehostError):
    """The rehearsal lab cannot be brought up or down; says what is missing."""


class ControlPlaneError(RehostError):
    """The control plane (a cloud platform's API, a hypervisor manager) refused or failed a
    request. A control-plane plugin raises a subclass of it."""
