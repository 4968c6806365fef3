"""The last guard before a disk is touched: the VM's host must be a target host, and the
Abiquo control plane wants it to run CentOS 6, as the host itself says. Unknown is not
CentOS 6."""

from __future__ import annotations

import pytest

from rehost.api import VM, Host, HostFacts, PreconditionError, target_host
from rehost.plugins.abiquo import AbiquoControl


class Ctx:
    def __init__(self, role: str, release: str, major: int | None) -> None:
        self.h = Host("c6-a", "198.18.0.1", role=role)  # type: ignore[arg-type]
        self.f = HostFacts("c6-a", release, major, None, "1.2.17", "0.12.1", 2, 1024)

    def host(self, name: str) -> Host:
        return self.h

    def facts(self, name: str) -> HostFacts:
        return self.f

    control = AbiquoControl()


def _target(vm: VM, ctx: Ctx) -> str:
    return target_host(vm, ctx)  # type: ignore[arg-type]


def vm() -> VM:
    return VM(name="ABQ_x", uuid="x", label="web01", source_host="c5-a", target_host="c6-a")


def test_a_centos_6_target_is_accepted() -> None:
    assert _target(vm(), Ctx("target", "CentOS release 6.4 (Final)", 6)) == "c6-a"  # type: ignore[arg-type]


@pytest.mark.parametrize(("role", "release", "major", "says"), [
    ("target", "CentOS release 5.11 (Final)", 5, "runs CentOS release 5.11"),
    ("target", "Debian GNU/Linux 12 (bookworm)", None, "runs Debian GNU/Linux 12"),
    ("target", "", None, "will not touch its disks"),
    ("source", "CentOS release 6.4 (Final)", 6, "not a target host"),
])
def test_anything_else_keeps_the_disks_untouched(role: str, release: str, major: int | None,
                                                 says: str) -> None:
    with pytest.raises(PreconditionError, match=says):
        _target(vm(), Ctx(role, release, major))  # type: ignore[arg-type]
