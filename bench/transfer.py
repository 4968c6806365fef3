"""Benchmark: one VM moved per storage strategy in the rehearsal lab, with numbers printed.

    sudo .venv/bin/python bench/transfer.py [--size-mib 2048] [--data-mib 100]

(``.venv/bin/python -m bench`` measures these copies and issue 10's other numbers in one lab.)

For each strategy it brings a fresh lab up (one CentOS 5 host, one CentOS 6 host, one VM with a
sparse raw disk), runs a real campaign through the CLI, and prints the transfer time, the rate,
the bytes sent, the space the disk takes on the target, and the VM's downtime. Not a test:
numbers on a shared 2-core machine vary; compare strategies within one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds the bench package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import rehost  # (sets the lab instance: REHOST_LAB_INSTANCE, default 60)
from rehost.core.journal import Journal
from rehost.core.remote import Shell, SshOptions
from rehost.lab import lab
from rehost.lab.siteconfig import write_site_config
from rehost.reports.model import build_report

LAB = """
[lab]
name = "bench"

[[hosts]]
name = "c5-a"
os = "centos-5.11"

[[hosts]]
name = "c6-a"
os = "centos-6.4"

[[vms]]
name = "big"
host = "c5-a"
disks = [{{ size_mib = {size}, format = "raw", data_mib = {data} }}]
"""


def run_one(strategy: str, size: int, data: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        desc = Path(tmp) / "lab.toml"
        desc.write_text(LAB.format(size=size, data=data))
        st = lab.up(desc)
        try:
            write_site_config(st, storage=strategy)
            run = rehost("run", "-c", str(st.site_config))
            if not run.ok:
                raise SystemExit(f"{strategy}: campaign failed:\n{run.stdout}{run.stderr}")
            journal = Journal(st.root / "state")
            report = build_report(journal, campaign="bench", storage=strategy,
                                  allocation="loadlevel")
            journal.close()
            vm = report["vms"][0]
            disk = st.data["vms"][0]["disks"][0]["path"]
            target = Shell(st.host("c6-a")["address"],
                           ssh=SshOptions(config=st.data["ssh_config"]))
            on_target = target.stat(disk)
            return {"strategy": strategy, "seconds": vm["transfer_seconds"],
                    "rate": vm["rate_mib_s"], "sent_mib": vm["bytes_moved"] / 2**20,
                    "target_alloc_mib": on_target.allocated / 2**20,
                    "downtime": vm["downtime_seconds"]}
        finally:
            lab.down(quiet=True)


def main() -> None:
    from loguru import logger

    logger.remove()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--data-mib", type=int, default=100)
    ap.add_argument("--strategies", default="scp,site-rsync,tar")
    args = ap.parse_args()
    rows = [run_one(s, args.size_mib, args.data_mib) for s in args.strategies.split(",")]
    print(f"one VM, raw disk of {args.size_mib} MiB holding {args.data_mib} MiB of data")
    print(f"{'strategy':<12} {'transfer s':>10} {'MiB/s':>8} {'sent MiB':>9} "
          f"{'on target MiB':>14} {'downtime s':>11}")
    for r in rows:
        print(f"{r['strategy']:<12} {r['seconds']:>10} {r['rate']:>8} {r['sent_mib']:>9.0f} "
              f"{r['target_alloc_mib']:>14.0f} {r['downtime']:>11}")


if __name__ == "__main__":
    main()
