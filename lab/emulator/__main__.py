"""``python -m rehost.lab.emulator --lab-dir DIR``: serve the lab's Abiquo API until SIGTERM.

Binds 127.0.0.1 on a free port (or ``--port``) and writes ``emulator.json`` (pid, port, url)
into the lab folder once it answers, so several labs run side by side without a port plan.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from loguru import logger

from rehost.lab.emulator import store
from rehost.lab.emulator.server import EmulatorServer
from rehost.lab.emulator.service import Emulator
from rehost.lab.lab import load_state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehost.lab.emulator")
    parser.add_argument("--lab-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password-file", type=Path, default=None,
                        help="file holding the password (default: LAB_DIR/abiquo-password)")
    parser.add_argument("--monitor-interval", type=float, default=0.5)
    args = parser.parse_args(argv)

    logger.remove()
    logger.add(sys.stderr, level=os.environ.get("REHOST_EMULATOR_LOG_LEVEL", "INFO"))
    lab = load_state(args.lab_dir)
    if lab is None:
        logger.error("no lab at {} (lab.json missing)", args.lab_dir)
        return 2
    password_file = args.password_file or args.lab_dir / "abiquo-password"
    password = password_file.read_text().strip()

    # its state survives a restart, as Abiquo's database does (store.py)
    emu = Emulator(lab, monitor_interval=args.monitor_interval,
                   state_file=args.lab_dir / store.FILE)
    server = EmulatorServer(emu, args.user, password, port=args.port)
    emu.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    info = {"pid": os.getpid(), "port": server.port, "url": server.base_url}
    tmp = args.lab_dir / "emulator.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, args.lab_dir / "emulator.json")
    logger.info("emulator: serving {} for lab {}", server.base_url, lab.data.get("name"))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        emu.stop()
        logger.info("emulator: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
