"""Pre-copy without a lab: the block stream of the digest script (a full copy that stays thin,
a delta that sends only the changed blocks, the digest of the result), the bandwidth cap's
pass-through, and the options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rehost.api.datastore import DIGEST_PY, staging_path, sums_path
from rehost.core.errors import ConfigError, PreconditionError
from rehost.core.model import Disk
from rehost.plugins.storage.scp import ScpCopy
from rehost.plugins.storage.shared import SharedDatastore
from rehost.plugins.storage.tar import PIPE, PIPE_CAPPED, TarSparseCopy
from tests.test_stream_verify import python2

B = 65536
SIZE = 16 << 20


def run(py: str, *args: str, data: bytes = b"") -> bytes:
    return subprocess.run([py, "-c", DIGEST_PY, *args], input=data, capture_output=True,
                          check=True).stdout


def thin_disk(path: Path) -> None:
    with path.open("wb") as f:
        f.truncate(SIZE)
        for at in range(0, SIZE, 2 << 20):
            f.seek(at + 4096)
            f.write(os.urandom(100_000))


def stage(py: str, src: Path, dst: Path) -> str:
    """The pre-copy: ``src`` to ``dst`` in full; returns the block sums file it wrote."""
    sums = sums_path(str(dst))
    out = run(py, "recv", "sha1", str(dst), "full", sums,
              data=run(py, "send", "sha1", str(src), "0", "full")).decode()
    text = Path(sums).read_text()
    lines = text.splitlines()
    assert lines[0] == "rehost-sums-1" and lines[-1] == f"end {len(lines) - 2}"
    assert out.splitlines() == [f"received {(len(lines) - 2) * B} {SIZE}"]
    assert not Path(sums + ".part").exists()
    return text


def delta(py: str, src: Path, dst: Path, sums: str) -> tuple[int, str]:
    """The delta into ``dst``: bytes sent, and the digest the receiver printed."""
    out = run(py, "recv", "sha1", str(dst), "delta",
              data=run(py, "send", "sha1", str(src), "0", "delta",
                       data=sums.encode())).decode().splitlines()
    return int(out[0].split()[1]), out[-1].split()[0]


def send_fails(py: str, src: Path, sums: str) -> str:
    proc = subprocess.run([py, "-c", DIGEST_PY, "send", "sha1", str(src), "0", "delta"],
                          input=sums.encode(), capture_output=True, check=False)
    assert proc.returncode == 3
    return proc.stderr.decode()


def digest(py: str, path: Path) -> str:
    return run(py, "file", "sha1", str(path)).decode().split()[0]


@pytest.fixture(params=["python3", "python2"])
def py(request: pytest.FixtureRequest) -> str:
    if request.param == "python3":
        return sys.executable
    found = python2()
    if found is None:
        pytest.skip("no Python 2 on this machine")
    return found


def test_the_pre_copy_is_thin_and_the_delta_sends_only_the_changed_blocks(
        py: str, tmp_path: Path) -> None:
    src, dst = tmp_path / "disk", tmp_path / "disk.rehost-precopy"
    thin_disk(src)
    sums = stage(py, src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_blocks * 512 <= src.stat().st_blocks * 512 + 16 * B  # thin
    with src.open("r+b") as f:
        f.seek(3 * B + 17)  # inside a block that held data
        f.write(b"changed")
        f.seek(5 << 20)  # a hole until now
        f.write(os.urandom(10))
        f.seek(4096)  # the first block's data gone: zeros now
        f.write(bytes(100_000))
    sent, got = delta(py, src, dst, sums)
    assert sent == 2 * B  # the zeroed block goes as a zero record, not as data
    assert dst.read_bytes() == src.read_bytes()
    assert got == digest(py, src)


def test_damage_to_the_staged_copy_that_the_delta_does_not_resend_changes_its_digest(
        py: str, tmp_path: Path) -> None:
    src, dst = tmp_path / "disk", tmp_path / "disk.rehost-precopy"
    thin_disk(src)
    sums = stage(py, src, dst)
    with dst.open("r+b") as f:  # the source's block is unchanged: nothing resends it
        f.seek((2 << 20) + 5000)
        byte = f.read(1)
        f.seek((2 << 20) + 5000)
        f.write(bytes([byte[0] ^ 1]))
    sent, got = delta(py, src, dst, sums)
    assert sent == 0
    assert got != digest(py, src)


def test_the_sender_refuses_block_sums_that_are_not_whole(py: str, tmp_path: Path) -> None:
    """The list is read as it comes, never held whole; a list cut short, out of order or
    missing is refused, not taken for "nothing changed"."""
    src, dst = tmp_path / "disk", tmp_path / "disk.rehost-precopy"
    thin_disk(src)
    sums = stage(py, src, dst)
    lines = sums.splitlines()
    assert "no block sums came" in send_fails(py, src, "")
    assert "not whole" in send_fails(py, src, "\n".join(lines[:-3]) + "\n")
    swapped = [lines[0], lines[2], lines[1], *lines[3:]]
    assert "out of order" in send_fails(py, src, "\n".join(swapped) + "\n")


def test_a_delta_whose_blocks_come_out_of_order_is_refused(py: str, tmp_path: Path) -> None:
    """The receiver takes the digest beside the records, in block order: a stream that goes
    back is refused, never digested wrong."""
    import struct

    src, dst = tmp_path / "disk", tmp_path / "disk.rehost-precopy"
    thin_disk(src)
    stage(py, src, dst)

    def rec(kind: int, off: int, data: bytes = b"") -> bytes:
        return struct.pack(">BQI", kind, off, len(data) if kind == 1 else B) + data

    stream = (b"rehost-blocks-1\n" + struct.pack(">Q", SIZE) + rec(1, 4 * B, b"x" * B)
              + rec(1, 2 * B, b"y" * B) + rec(3, 0))
    proc = subprocess.run([py, "-c", DIGEST_PY, "recv", "sha1", str(dst), "delta"],
                          input=stream, capture_output=True, check=False)
    assert proc.returncode == 3
    assert "rehost: the block stream is out of order" in proc.stderr.decode()
    assert not proc.stdout.strip()


def test_the_bandwidth_cap_passes_every_byte(tmp_path: Path) -> None:
    data = os.urandom(3 * B + 5)
    assert run(sys.executable, "throttle", "1000", data=data) == data


def test_the_capped_tar_pipe_only_adds_the_throttle() -> None:
    assert PIPE_CAPPED.replace('| sh -c "$5" rehost-digest "$6" throttle "$7" ', "") == PIPE


def test_options() -> None:
    tar = TarSparseCopy({})
    assert (tar.precopy_mode, tar.bwlimit, tar.precopy_min) == ("auto", 0.0, 64 << 20)
    assert TarSparseCopy({"precopy": False, "bwlimit_mib": 12.5}).bwlimit == 12.5
    assert ScpCopy({"precopy": True}).precopy_mode is True
    with pytest.raises(ConfigError, match=r'storage\.options\.precopy: choose true, false or'):
        TarSparseCopy({"precopy": "yes"})
    with pytest.raises(ConfigError, match=r"storage\.options\.precopy: the shared strategy"):
        SharedDatastore({"precopy": True})
    with pytest.raises(ConfigError, match=r"storage\.options\.bwlimit_mib"):
        TarSparseCopy({"bwlimit_mib": -1})
    with pytest.raises(ConfigError, match=r"storage\.options\.precopy_min_mib"):
        TarSparseCopy({"precopy_min_mib": "big"})
    with pytest.raises(ConfigError, match=r"unknown key storage\.options\.precopy_typo"):
        TarSparseCopy({"precopy_typo": 1})


def test_the_staging_name_is_none_of_the_disks_names() -> None:
    disk = Disk(target="vda", source="/var/lib/virt/d")
    assert staging_path(disk) == "/var/lib/virt/d.rehost-precopy"
    assert staging_path(disk) not in ("/var/lib/virt/d", "/var/lib/virt/d_BACK")
    with pytest.raises(PreconditionError):
        staging_path(Disk(target="vdb"))
