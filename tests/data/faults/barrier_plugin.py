"""A test plugin that stops one VM at one stage boundary, in the process, until the test says go.

``REHOST_TEST_BARRIER="VM:STAGE:EVENT:DIR"`` (EVENT is ``start`` or ``finish``): when VM's STAGE
reaches EVENT, the plugin creates ``DIR/reached`` and then opens the FIFO ``DIR/go`` for
reading, which blocks until the test opens it for writing. The test injects its fault in
between, so the fault lands exactly there, not a few milliseconds later."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rehost.api import Context, hookimpl


def _wait_if_here(stage: str, vm: Any, event: str) -> None:
    spec = os.environ.get("REHOST_TEST_BARRIER", "")
    if not spec or vm is None:
        return
    name, at, when, folder = spec.split(":", 3)
    if (vm.name, stage, event) != (name, at, when) and (getattr(vm, "label", None), stage,
                                                        event) != (name, at, when):
        return
    (Path(folder) / "reached").touch()
    with open(Path(folder) / "go") as fifo:  # blocks until the test has injected its fault
        fifo.read()


@hookimpl
def rehost_stage_start(stage: str, vm: Any, ctx: Context) -> None:
    _wait_if_here(stage, vm, "start")


@hookimpl
def rehost_stage_finish(stage: str, vm: Any, ctx: Context, result: Any) -> None:
    _wait_if_here(stage, vm, "finish")
