"""rehost: move powered-off KVM virtual machines from old hypervisor hosts to new ones."""

from __future__ import annotations

__version__ = "0.1.0"
