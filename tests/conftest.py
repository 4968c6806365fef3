"""Shared fixtures. Lab tests bring up real libvirtd + sshd hosts in namespaces (needs root)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loguru import logger

from rehost.lab import lab as labmod
from rehost.lab.lab import LabState


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker has labs of its own: worker N uses lab instance
    REHOST_LAB_INSTANCE + 10 N (and + 100 for ``make_lab``), so the labs of several workers
    never share addresses, namespaces or folders."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker:  # the one process that starts the workers (or the only one)
        os.environ.setdefault("REHOST_TEST_CANARY", uuid.uuid4().hex[:8])
    if worker.startswith("gw"):
        base = int(os.environ.get("REHOST_LAB_INSTANCE", "0") or "0")
        os.environ["REHOST_LAB_INSTANCE"] = str(base + 10 * int(worker[2:]))


@pytest.fixture(autouse=True)
def _quiet_loguru() -> Iterator[None]:
    logger.remove()
    logger.add(lambda m: None, level="DEBUG")
    yield


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")


@pytest.fixture(scope="session")
def lab() -> Iterator[LabState]:
    """The default lab, up for the whole session. Tests must leave it as they found it
    (or use ``make_lab`` for a lab of their own)."""
    _need_root()
    st = labmod.up()
    yield st
    labmod.down(quiet=True)


@pytest.fixture
def make_lab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], LabState]]:
    """Bring up a lab of the test's own from a description text; it is taken down after the
    test. It is another lab instance (REHOST_LAB_INSTANCE + 100), so the session lab stays."""
    _need_root()
    made: list[bool] = []
    base = int(os.environ.get("REHOST_LAB_INSTANCE", "0") or "0")
    monkeypatch.setenv("REHOST_LAB_INSTANCE", str(base + 100))
    monkeypatch.delenv("REHOST_LAB_DIR", raising=False)

    def factory(description: str) -> LabState:
        path = tmp_path / "lab.toml"
        path.write_text(description)
        made.append(True)
        return labmod.up(path)

    yield factory
    if made:
        labmod.down(quiet=True)
