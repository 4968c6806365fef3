"""A client for the part of the Abiquo 2.4/2.6 REST API rehost needs, and its entities.

A library, not a plugin: the ``abiquo`` control-plane plugin and the Abiquo allocation
strategies use it, and so does the rehearsal lab's emulator. The core never imports it.
"""

from __future__ import annotations

from rehost.abiquo.client import AbiquoClient
from rehost.abiquo.errors import AbiquoError
from rehost.abiquo.types import (
    DEPLOYED,
    FitPolicyRule,
    Link,
    LoadLevelRule,
    Machine,
    Task,
    VirtualMachine,
)

__all__ = ["DEPLOYED", "AbiquoClient", "AbiquoError", "FitPolicyRule", "Link", "LoadLevelRule",
           "Machine", "Task", "VirtualMachine"]
