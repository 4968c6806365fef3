"""What a strategy object offers. Strategies are built by the factory of a
:class:`~rehost.core.model.StrategyRecord` from their options in the site config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign
    from rehost.core.model import VM, Disk, Finding


class StorageStrategy(Protocol):
    """Moves the user's disks: every method checks its precondition before it changes
    anything, and is safe to run twice. Results are JSON-serialisable facts."""

    name: str

    def preflight(self, ctx: Campaign) -> list[Finding]: ...

    def space_needed(self, ctx: Campaign, vm: VM, disk: Disk) -> int:
        """Bytes the disk takes on the target datastore after the transfer."""
        ...

    def preserve_disks(self, vm: VM, ctx: Campaign) -> dict[str, Any]: ...

    def transfer(self, vm: VM, ctx: Campaign) -> dict[str, Any]: ...

    def remove_new_disks(self, vm: VM, ctx: Campaign) -> dict[str, Any]: ...

    def swap_disks(self, vm: VM, ctx: Campaign) -> dict[str, Any]: ...

    def verify(self, vm: VM, ctx: Campaign) -> dict[str, Any]: ...

    def cleanup(self, vm: VM, ctx: Campaign) -> dict[str, Any]: ...


class AllocationStrategy(Protocol):
    """Makes the control plane send new deploys to the target hosts, and puts it back."""

    name: str

    def fence(self, ctx: Campaign) -> dict[str, Any]:
        """Change the rules; return a JSON-serialisable record of what was there before."""
        ...

    def unfence(self, ctx: Campaign, fenced: dict[str, Any]) -> dict[str, Any]:
        """Restore what ``fence`` recorded; return what was restored."""
        ...
