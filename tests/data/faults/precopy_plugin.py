"""A test plugin that acts on a VM at the end of its ``precopy`` stage, in the process, before
the VM goes on to ``power_off`` (so the fault lands exactly there, with no race):

``REHOST_TEST_PRECOPY`` is a JSON object, VM label -> action:

- ``"write"``: write two 64 KiB blocks of new data into the running VM's disk on its source
  host (a guest writing to its disk after the pre-copy);
- ``"flip"``: flip one byte inside the data of the staged copy on the predicted target (damage
  the delta does not resend: the source's block did not change);
- ``"occupy"``: define a domain on the predicted target that takes all its memory, so that the
  VM no longer fits there and ``deploy`` places it elsewhere (a wrong prediction).
"""

from __future__ import annotations

import json
import os
from typing import Any

from rehost.api import Context, PrecopyResult, hookimpl

#: at offsets $2, $3...: 64 KiB of new bytes (argv: path, offsets)
WRITE = ("import os, sys\n"
         "f = open(sys.argv[1], 'r+b')\n"
         "for at in sys.argv[2:]:\n"
         "    f.seek(int(at)); f.write(os.urandom(65536))\n"
         "f.close()\n")

#: flips the byte 1000 into the first 64 KiB block past 1 MiB that holds data (argv: path);
#: prints its offset
FLIP = ("import sys\n"
        "f = open(sys.argv[1], 'r+b'); at = 1 << 20\n"
        "while True:\n"
        "    f.seek(at); block = f.read(65536)\n"
        "    if not block: raise SystemExit('no data')\n"
        "    if block.strip(bytes(1)): break\n"
        "    at += 65536\n"
        "f.seek(at + 1000); b = f.read(1); f.seek(at + 1000); f.write(bytes([b[0] ^ 0xff]))\n"
        "f.close(); print(at + 1000)\n")

HOG = ("<domain type='qemu'><name>precopy-hog</name><memory unit='GiB'>4096</memory>"
       "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>")

#: offsets "write" changes (64 KiB aligned, inside a 64 MiB disk)
WRITE_AT = (5 << 20, 40 << 20)


@hookimpl
def rehost_stage_finish(stage: str, vm: Any, ctx: Context, result: Any) -> None:
    plan = json.loads(os.environ.get("REHOST_TEST_PRECOPY", "{}"))
    if stage != "precopy" or vm is None or vm.label not in plan:
        return
    action = plan[vm.label]
    pre = result if isinstance(result, PrecopyResult) else vm.fact(PrecopyResult)
    assert pre is not None and pre.host and pre.staged, f"{vm.label} was not pre-copied: {pre}"
    if action == "write":
        ctx.shell(vm.source_host).run(["python3", "-c", WRITE, vm.file_disks()[0].source or "",
                                       *(str(at) for at in WRITE_AT)])
    elif action == "flip":
        ctx.shell(pre.host).run(["python3", "-c", FLIP, pre.staged[0].staging])
    elif action == "occupy":
        ctx.hypervisor(pre.host).define(HOG)
