"""A plugin the bench loads for its pre-copy runs: when a VM labelled ``precopy...`` has finished
its ``precopy`` stage (its disk staged on the target, the VM still running), 1 % of its disk's
64 KiB blocks are rewritten on the source host with new data, evenly spread, before it is
powered off: the delta then has 1 % of the disk to send."""

from __future__ import annotations

from typing import Any

from rehost.api import Context, hookimpl

#: rewrites 1 % of the 64 KiB blocks of the file argv[1], evenly spread (python3 on the host)
CHANGE = ("import os, sys\n"
          "f = open(sys.argv[1], 'r+b'); f.seek(0, 2); blocks = f.tell() // 65536\n"
          "step = 100\n"
          "for i in range(0, blocks, step):\n"
          "    f.seek(i * 65536); f.write(os.urandom(65536))\n"
          "f.close()\n")


@hookimpl
def rehost_stage_finish(stage: str, vm: Any, ctx: Context, result: Any) -> None:
    if stage == "precopy" and vm is not None and (vm.label or vm.name).startswith("precopy"):
        ctx.shell(vm.source_host).run(["python3", "-c", CHANGE,
                                       vm.file_disks()[0].source or ""])
