"""The bench's own arithmetic and table, without a lab (the bench itself is
``python -m bench``: numbers, never timed tests)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from bench.common import Run, Stage, union_within
from bench.suite import (
    CAMPAIGN,
    Campaign,
    Copy,
    Preflight,
    description,
    own_time,
    report,
    site_config,
)
from rehost.lab.description import parse_description
from rehost.lab.lab import LabState


def test_union_of_waits_within_a_span() -> None:
    assert union_within([], 0, 10) == 0
    assert union_within([(1, 3), (2, 4), (8, 20)], 0, 10) == 5  # 1..4 and 8..10
    assert union_within([(-5, 1), (9, 12)], 0, 10) == 2


def test_own_time_is_the_span_minus_the_main_threads_waits() -> None:
    main, other = 1, 2
    run = Run(["run"], 0, 30.0, "", "", {"main": main, "waits": [
        [main, 10.0, 12.0, "remote"], [main, 12.5, 13.0, "libvirt"],
        [other, 10.0, 20.0, "remote"],  # another thread's wait: not the VM's
        [main, 21.0, 24.0, "sleep"],
    ]})
    journal = [Stage("a", "locate", 10.0, 11.0, "finish"), Stage("a", "cleanup", 12.0, 14.0,
                                                                  "finish"),
               Stage("b", "locate", 20.0, 25.0, "finish"), Stage(None, "report", 0, 30, "finish")]
    own, by_kind = own_time(run, journal)
    assert own == [4.0 - 2.5, 5.0 - 3.0]
    assert by_kind == {"remote": 2.0, "libvirt": 0.5, "sleep": 3.0}


def test_the_bench_lab_and_its_site_configs(tmp_path: Path) -> None:
    desc = parse_description(description(["scp", "tar"]))
    names = {v.name for v in desc.vms}
    assert {"sparse-scp", "dense-scp", "sparse-tar", "dense-tar"} <= names
    assert len([n for n in names if n.startswith("p1-")]) == CAMPAIGN
    sparse = next(v for v in desc.vms if v.name == "sparse-tar").disks[0]
    assert (sparse.size_mib, sparse.data_mib, sparse.format) == (2048, 102, "raw")

    st = LabState({"name": "bench", "root": str(tmp_path), "ssh_config": "/x/ssh_config",
                   "hosts": [{"name": "c5-a", "os": "centos-5.11", "address": "198.18.9.11",
                              "uri": "qemu+ssh://x", "datastore": "/var/lib/virt",
                              "datastore_dir": "/a"}]})
    cfg, state = site_config(st, "move-x", ["p4-01", "p4-02"], "tar", 4,
                             extra={"storage.options": {"precopy": True}})
    data = tomllib.loads(cfg.read_text())
    assert data["campaign"]["vms"] == ["p4-01", "p4-02"]
    assert data["campaign"]["parallel"] == 4
    assert data["campaign"]["state_dir"] == str(state)
    assert data["storage"] == {"strategy": "tar", "options": {"precopy": True}}


def _run(argv: list[str], seconds: float, ok: bool = True) -> Run:
    return Run(argv, 0 if ok else 1, seconds, "", "INFO    preflight in 1.00 s: x 1 s",
               {"rusage": {"user": 1.0, "system": 0.5, "maxrss_kib": 80_000}}, 80_000)


def test_the_table_prints_whatever_is_missing() -> None:
    copy = Copy(10.0, 100 << 20, {"preserve_disks": 1.0, "transfer": 8.0, "verify": 1.0}, 20.0)
    out: dict[str, Any] = {
        "when": "now", "cpus": 2, "instance": "60", "minutes": 9.0, "load": ["1", "2"],
        "default": "tar", "vms": 30, "sparse_source": 100 << 20,
        "by_hand": {"sparse": {"scp": Copy(40.0, 2048 << 20), "rsync -S": Copy(None,
                                                                                 error="x")},
                    "dense": {"scp": Copy(6.0, 512 << 20)}},
        "by_rehost": {"tar": {"sparse": copy, "dense": Copy(None, error="failed\nbadly")},
                      "scp": {}},
        "downtime_cold": 20.0, "downtime_precopy": "n/a (not built)",
        "downtime_precopy_s": None,
        "p1": Campaign(_run(["run"], 100.0), 99.0, [0.2, 0.3], {"remote": 5.0}, CAMPAIGN,
                       {"done": CAMPAIGN}),
        "p4": Campaign(_run(["run"], 30.0, ok=False), 29.0, [], {}, 3,
                       {"done": 3, "held": 9}, "p4-05: deploy: boom"),
        "preflight_cold": Preflight(_run(["-vv", "run"], 9.0), 8.0),
        "preflight_warm": Preflight(_run(["-vv", "run"], 2.0), 1.5),
        "runs": [_run(["run"], 1.0)], "phases": {"lab up": 60.0}, "kept": "/tmp/x",
    }
    text = report(out)
    assert "0.25x" in text and "not comparable" in text and "p4-05: deploy: boom" in text
    assert "mean 0.25 s  (target ≤ 0.5 s) ok" in text
    assert "pre-copy n/a (not built)" in text
    assert "FAILED: badly" in text
