"""The crash matrix's small form (tests/crash_matrix.py has the whole matrix and how to run
it): rehost SIGKILLed at a point of each kind, in libvirt and Abiquo campaigns, then resumed or
rolled back. No point may lose a byte or leave anything behind but the documented X_BACK."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.crash_matrix import run_matrix

pytestmark = [pytest.mark.lab, pytest.mark.slow]


# several campaigns in one test: more than the suite's 600 s on a loaded machine
@pytest.mark.timeout(1800)
def test_the_small_crash_matrix_loses_nothing(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    base = int(os.environ.get("REHOST_LAB_INSTANCE", "0") or "0")
    monkeypatch.setenv("REHOST_LAB_INSTANCE", str(base + 100))  # as make_lab does
    lines: list[str] = []
    tried, lost, unclean = run_matrix(False, tmp_path, say=lines.append)
    report = "\n".join(lines)
    assert tried >= 6, report
    assert (lost, unclean) == (0, 0), report
    assert lines[-1] == f"points {tried}, lost 0, unclean 0"
