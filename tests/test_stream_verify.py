"""The sparse digest and the check of a copy as it streams (``rehost.api.datastore``), on this
machine: what a copy's check would say of the bytes on disk and of a ``tar --sparse`` stream.

The digest runs on the hosts in whatever Python they have (CentOS 5: 2.4); the script is
checked here for the constructs 2.4 lacks, and run under a Python 2 when this machine has one.
The lab tests (``test_stream_verify_lab.py``) run it over ssh inside whole campaigns.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from rehost.api import DatastoreStrategy, Shell, quote_argv
from rehost.api.datastore import (
    DIGEST_PY,
    backing_chain,
    content_digest,
    digest_argv,
    parse_backing,
)
from rehost.core.errors import ConfigError, PreconditionError, RemoteError

MIB = 1 << 20
BLOCK = 1 << 16


def write(path: Path, size: int, pieces: list[tuple[int, bytes]]) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in pieces:
            f.seek(offset)
            f.write(data)
    return path


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def rnd(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """A thin 8 MiB disk: data here and there, holes between, a last block cut short."""
    return write(tmp_path / "disk_BACK", 8 * MIB + 1000,
                 [(0, rnd(5000)), (3 * MIB + 17, rnd(70000, 2)), (8 * MIB + 990, b"end!")])


def digest(path: Path, algorithm: str = "sparse-sha1") -> str:
    return content_digest(Shell(), str(path), algorithm)


def test_the_digest_is_of_the_content_not_of_the_holes(disk: Path, tmp_path: Path) -> None:
    thick = tmp_path / "thick"
    thick.write_bytes(disk.read_bytes())  # the same bytes, every zero written
    assert os.stat(thick).st_blocks > 4 * os.stat(disk).st_blocks
    assert digest(disk) == digest(thick)
    assert digest(disk, "sparse-md5") == digest(thick, "sparse-md5") != digest(disk)
    # and the plain checksums still are what the tools say
    assert digest(disk, "sha1") == sha1(disk)


@pytest.mark.parametrize("where", [0, 4999, 5000, BLOCK - 1, BLOCK, 3 * MIB + 17 + 69999,
                                   5 * MIB, 8 * MIB + 999])
def test_one_flipped_byte_anywhere_changes_the_digest(disk: Path, tmp_path: Path,
                                                      where: int) -> None:
    """In the data, in a hole (a zero becomes a one), at block edges, in the last byte."""
    want = digest(disk)
    data = bytearray(disk.read_bytes())
    data[where] ^= 0x01
    damaged = tmp_path / "damaged"
    damaged.write_bytes(bytes(data))
    assert digest(damaged) != want


def test_a_longer_or_shorter_disk_is_another_disk(disk: Path, tmp_path: Path) -> None:
    want = digest(disk)
    longer = write(tmp_path / "longer", disk.stat().st_size + 1, [(0, disk.read_bytes())])
    shorter = write(tmp_path / "shorter", 8 * MIB, [(0, disk.read_bytes()[:8 * MIB])])
    zeros = write(tmp_path / "zeros", disk.stat().st_size, [])
    assert len({want, digest(longer), digest(shorter), digest(zeros)}) == 4


def stream_into(folder: Path, source: Path, name: str | None = None, damage: int | None = None,
                cut: int | None = None) -> subprocess.CompletedProcess[bytes]:
    """``tar --format=gnu --sparse`` of ``source``, (damaged), into the digest's unpacker."""
    tar = subprocess.run(["tar", "-C", str(source.parent), "--format=gnu", "--sparse", "-cf",
                          "-", source.name], capture_output=True, check=True).stdout
    data = bytearray(tar)
    if damage is not None:
        data[damage] ^= 0x01
    if cut is not None:
        del data[cut:]
    folder.mkdir(exist_ok=True)
    unpack = DatastoreStrategy.digest_unpack_argv(["tar", "-C", str(folder), "-xpf", "-"],
                                                  name or source.name, "sparse-sha1")
    return subprocess.run(unpack, input=bytes(data), capture_output=True, check=False)


def test_the_stream_digest_is_the_digest_of_the_file_that_arrived(disk: Path,
                                                                  tmp_path: Path) -> None:
    out = stream_into(tmp_path / "target", disk)
    assert out.returncode == 0, out.stderr
    arrived = tmp_path / "target" / disk.name
    streamed = DatastoreStrategy.read_digest(out.stdout.decode(), "here", str(arrived))
    assert streamed == digest(disk) == digest(arrived)
    assert sha1(arrived) == sha1(disk)
    assert os.stat(arrived).st_blocks < os.stat(disk).st_size // 512 // 4, "it stayed thin"


def test_a_byte_flipped_on_the_way_gives_another_digest(disk: Path, tmp_path: Path) -> None:
    # the stream: a 512-byte header, then the data of the first segment
    out = stream_into(tmp_path / "target", disk, damage=512 + 100)
    assert out.returncode == 0, out.stderr
    assert DatastoreStrategy.read_digest(out.stdout.decode(), "here", "x") != digest(disk)


@pytest.mark.parametrize("how", ["header", "name", "cut"])
def test_a_stream_that_is_not_the_disk_is_refused(disk: Path, tmp_path: Path,
                                                  how: str) -> None:
    out = stream_into(tmp_path / "target", disk, damage=100 if how == "header" else None,
                      name="other_BACK" if how == "name" else None,
                      cut=4000 if how == "cut" else None)
    assert out.returncode != 0
    message = {"header": "a tar header with a wrong checksum",
               "name": "the stream holds another file",
               "cut": "the stream ended early"}[how]
    assert f"rehost: {message}" in out.stderr.decode()
    assert not out.stdout.strip()
    if how != "cut":  # nothing reached tar before the file's headers were checked
        assert list((tmp_path / "target").iterdir()) == []


def test_long_names_large_disks_and_many_extents(tmp_path: Path) -> None:
    """GNU tar's long-name records, base-256 sizes (over 8 GiB) and sparse maps longer than
    one header."""
    name = "v" * 150 + "_BACK"
    big = write(tmp_path / name, 9 << 30, [(i * 40 * MIB, rnd(3000, i)) for i in range(30)]
                + [((9 << 30) - 3, b"end")])
    out = stream_into(tmp_path / "target", big)
    assert out.returncode == 0, out.stderr
    assert DatastoreStrategy.read_digest(out.stdout.decode(), "here", "x") == digest(big)
    assert digest(tmp_path / "target" / name) == digest(big)


def test_hostile_names_are_data(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    for n, name in enumerate(["it's a disk", "$(touch pwned)", "`touch pwned`", "two\nlines",
                              "a;touch pwned|c", "ünïcödé *"]):
        folder = tmp_path / f"src{n}"
        folder.mkdir()
        source = write(folder / name, 3 * MIB, [(MIB, rnd(1000, n))])
        assert digest(source) == digest(write(tmp_path / f"copy{n}", 3 * MIB,
                                              [(MIB, rnd(1000, n))]))
        out = stream_into(tmp_path / f"target{n}", source)
        assert out.returncode == 0, out.stderr
        assert (tmp_path / f"target{n}" / name).read_bytes() == source.read_bytes()
        # through a shell, as over ssh
        line = quote_argv(digest_argv("file", "sha1", str(source)))
        got = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True,
                             cwd=tmp_path)
        assert got.stdout.split()[0] == digest(source)
    assert not canary.exists()


def test_a_missing_file_is_an_error_that_says_so(tmp_path: Path) -> None:
    with pytest.raises(RemoteError) as err:
        digest(tmp_path / "nope")
    assert "No such file" in err.value.stderr


def tar_of(source: Path) -> bytes:
    return subprocess.run(["tar", "-C", str(source.parent), "--format=gnu", "--sparse", "-cf",
                           "-", source.name], capture_output=True, check=True).stdout


def write_into(folder: Path, stream: bytes, name: str) -> subprocess.CompletedProcess[bytes]:
    """The stream into the digest's own writer (``unpack``), as the target host runs it."""
    folder.mkdir(exist_ok=True)
    argv = DatastoreStrategy.digest_write_argv(str(folder), name, "sparse-sha1")
    return subprocess.run(argv, input=stream, capture_output=True, check=False)


def test_the_digest_writes_the_disk_as_tar_would_and_checks_it_as_it_flows(
        disk: Path, tmp_path: Path) -> None:
    os.chmod(disk, 0o640)
    os.chown(disk, 107, 0)  # not root's: the owner comes from the stream
    os.utime(disk, (1_600_000_000, 1_600_000_000))
    stream = tar_of(disk)
    by_tar = tmp_path / "by-tar"
    by_tar.mkdir()
    subprocess.run(["tar", "-C", str(by_tar), "--sparse", "-xpf", "-"], input=stream,
                   check=True)
    out = write_into(tmp_path / "target", stream, disk.name)
    assert out.returncode == 0, out.stderr
    arrived = tmp_path / "target" / disk.name
    assert DatastoreStrategy.read_digest(out.stdout.decode(), "here", "x") == digest(disk)
    assert arrived.read_bytes() == disk.read_bytes()
    mine, tars = os.stat(arrived), os.stat(by_tar / disk.name)
    assert (mine.st_mode, mine.st_uid, mine.st_gid, mine.st_mtime, mine.st_size) == \
        (tars.st_mode, tars.st_uid, tars.st_gid, tars.st_mtime, tars.st_size)
    assert mine.st_blocks <= tars.st_blocks, "the holes were filled"
    assert mine.st_blocks < os.stat(disk).st_size // 512 // 4


def test_the_writer_replaces_a_file_there_and_a_damaged_stream_gives_another_digest(
        disk: Path, tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    old = write(tmp_path / "target" / disk.name, 20 * MIB, [(19 * MIB, b"stale")])
    data = bytearray(tar_of(disk))
    data[512 + 100] ^= 0x01
    out = write_into(tmp_path / "target", bytes(data), disk.name)
    assert out.returncode == 0, out.stderr
    assert DatastoreStrategy.read_digest(out.stdout.decode(), "here", "x") != digest(disk)
    assert old.stat().st_size == disk.stat().st_size  # replaced, not written over


@pytest.mark.parametrize("how", ["header", "name", "cut", "trailer"])
def test_a_stream_the_writer_refuses_leaves_no_file(disk: Path, tmp_path: Path,
                                                    how: str) -> None:
    data = bytearray(tar_of(disk))
    if how == "header":
        data[100] ^= 0x01
    elif how == "cut":
        del data[40_000:]  # part way through the data: the file was being written
    elif how == "trailer":
        data += b"x" * 512  # something after the archive's end
    out = write_into(tmp_path / "target", bytes(data),
                     "other_BACK" if how == "name" else disk.name)
    assert out.returncode == 3
    message = {"header": "a tar header with a wrong checksum",
               "name": "the stream holds another file",
               "cut": "the stream ended early",
               "trailer": "the stream does not end as a tar archive ends"}[how]
    assert f"rehost: {message}" in out.stderr.decode()
    assert not out.stdout.strip()
    assert list((tmp_path / "target").iterdir()) == []


def test_the_writer_takes_hostile_names_as_data(tmp_path: Path) -> None:
    for n, name in enumerate(["it's a disk", "$(touch pwned)", "two\nlines", "ünïcödé *"]):
        folder = tmp_path / f"src{n}"
        folder.mkdir()
        source = write(folder / name, 3 * MIB, [(MIB, rnd(1000, n))])
        line = quote_argv(DatastoreStrategy.digest_write_argv(str(tmp_path / f"t{n}"), name,
                                                              "sparse-sha1"))
        (tmp_path / f"t{n}").mkdir()
        out = subprocess.run(["sh", "-c", line], input=tar_of(source), capture_output=True,
                             check=False, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert (tmp_path / f"t{n}" / name).read_bytes() == source.read_bytes()
    assert not (tmp_path / "pwned").exists()


def python2() -> str | None:
    for found in [shutil.which("python2.7"), shutil.which("python2"),
                  *sorted(glob.glob("/root/.pyenv/versions/2.*/bin/python"))]:
        if found and subprocess.run([found, "-c", "import sys; assert sys.version_info[0] == 2"],
                                    capture_output=True, check=False).returncode == 0:
            return found
    return None


def test_the_digest_is_the_same_in_python_2(disk: Path, tmp_path: Path) -> None:
    """Python 2 has no SEEK_DATA: the whole file is read, and the zero blocks skipped."""
    py = python2()
    if py is None:
        pytest.skip("no Python 2 on this machine")
    out = subprocess.run([py, "-c", DIGEST_PY, "file", "sha1", str(disk)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == [digest(disk), str(disk.stat().st_size)]
    tar = subprocess.run(["tar", "-C", str(tmp_path), "--format=gnu", "--sparse", "-cf", "-",
                          disk.name], capture_output=True, check=True).stdout
    (tmp_path / "t").mkdir()
    out2 = subprocess.run([py, "-c", DIGEST_PY, "untar", "md5", disk.name, "tar", "-C",
                           str(tmp_path / "t"), "-xf", "-"], input=tar, capture_output=True,
                          check=True)
    assert out2.stdout.decode().split()[0] == digest(disk, "sparse-md5")
    out3 = subprocess.run([py, "-c", DIGEST_PY, "unpack", "sha1", str(tmp_path / "t"),
                           disk.name], input=tar, capture_output=True, check=True)
    assert out3.stdout.decode().split()[0] == digest(disk)
    assert (tmp_path / "t" / disk.name).read_bytes() == disk.read_bytes()


#: names CentOS 5's Python 2.4 does not have (2.5 brought most of them)
NOT_IN_PY24 = {"any", "all", "next", "bytearray", "memoryview", "bytes", "print", "format",
               "hashlib.sha256", "os.SEEK_SET", "os.SEEK_CUR", "os.SEEK_END"}


def test_the_digest_script_uses_only_what_python_2_4_has() -> None:
    tree = ast.parse(DIGEST_PY)
    for node in ast.walk(tree):
        where = f"line {getattr(node, 'lineno', '?')}"
        assert not isinstance(node, (ast.With, ast.IfExp, ast.SetComp, ast.DictComp,
                                     ast.Set, ast.Nonlocal, ast.JoinedStr, ast.Starred)), where
        if isinstance(node, ast.ExceptHandler):
            assert node.name is None, f"{where}: 'except E as e' (use sys.exc_info())"
        if isinstance(node, ast.Try):
            assert not (node.handlers and node.finalbody), f"{where}: try/except/finally"
        if isinstance(node, ast.Constant):
            assert not isinstance(node.value, bytes), f"{where}: a b'' literal"
        if isinstance(node, ast.Call):
            assert not node.keywords or all(k.arg for k in node.keywords), where
        if isinstance(node, ast.Name):
            assert node.id not in NOT_IN_PY24, f"{where}: {node.id}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert f"{node.value.id}.{node.attr}" not in NOT_IN_PY24, where
            assert node.attr != "format", f"{where}: str.format"
        if isinstance(node, ast.ClassDef):
            assert not node.decorator_list, where
    # hashlib (2.5) only where its absence is handled
    assert "import hashlib" in DIGEST_PY and "except ImportError" in DIGEST_PY


def test_unknown_digest_option_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"storage\.options\.digest: choose sparse or whole"):
        DatastoreStrategy({"digest": "partial"})
    assert DatastoreStrategy().content_algorithm == "sparse-sha1"
    assert DatastoreStrategy({"checksum": "md5"}).content_algorithm == "sparse-md5"
    assert DatastoreStrategy({"checksum": "sha256"}).content_algorithm == "sha256"
    assert DatastoreStrategy({"digest": "whole"}).content_algorithm == "sha1"


# -- backing files ----------------------------------------------------------------------------

CENTOS5_INFO = """image: /var/lib/virt/ABQ_1-disk0
file format: qcow2
virtual size: 10G (10737418240 bytes)
disk size: 136K
cluster_size: 4096
backing file: base.img (actual path: /var/lib/virt/base.img)
"""

NEW_TEXT_INFO = """image: /var/lib/virt/d
file format: qcow2
virtual size: 64 MiB (67108864 bytes)
disk size: 196 KiB
cluster_size: 65536
backing file: /var/lib/virt/tmpl/base.raw
backing file format: raw
"""


def test_backing_files_are_read_from_every_form_of_qemu_img_info() -> None:
    assert parse_backing(CENTOS5_INFO) == ("base.img", "/var/lib/virt/base.img", None)
    assert parse_backing(NEW_TEXT_INFO) == ("/var/lib/virt/tmpl/base.raw", None, "raw")
    assert parse_backing('{"format": "qcow2", "backing-filename": "b.qcow2", '
                         '"full-backing-filename": "/d/b.qcow2", '
                         '"backing-filename-format": "qcow2"}') == \
        ("b.qcow2", "/d/b.qcow2", "qcow2")
    assert parse_backing(CENTOS5_INFO.replace("backing file: base.img (actual path: "
                                              "/var/lib/virt/base.img)\n", "")) == \
        (None, None, None)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], capture_output=True, check=True)


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="no qemu-img")
def test_the_backing_chain_of_an_image(tmp_path: Path) -> None:
    (tmp_path / "tmpl").mkdir()
    write(tmp_path / "tmpl" / "base.raw", 4 * MIB, [(0, rnd(1000))])
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", str(tmp_path / "tmpl" / "base.raw"),
             str(tmp_path / "tmpl" / "mid.qcow2"))
    # a relative name: from the image's own folder, as qemu resolves it
    qemu_img("create", "-f", "qcow2", "-F", "qcow2", "-b", "tmpl/mid.qcow2",
             str(tmp_path / "disk"))
    sh = Shell()
    assert backing_chain(sh, str(tmp_path / "disk"), "qcow2") == \
        [str(tmp_path / "tmpl" / "mid.qcow2"), str(tmp_path / "tmpl" / "base.raw")]
    assert backing_chain(sh, str(tmp_path / "disk"), None) == \
        [str(tmp_path / "tmpl" / "mid.qcow2"), str(tmp_path / "tmpl" / "base.raw")]
    assert backing_chain(sh, str(tmp_path / "tmpl" / "base.raw"), "raw") == []
    qemu_img("create", "-f", "qcow2", str(tmp_path / "alone"), "1M")
    assert backing_chain(sh, str(tmp_path / "alone"), "qcow2") == []
    with pytest.raises(RemoteError):
        backing_chain(sh, str(tmp_path / "missing"), "qcow2")


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="no qemu-img")
def test_a_backing_file_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", "-u", "-F", "raw", "-b", "nbd:localhost:10809",
             str(tmp_path / "disk"), "1M")
    with pytest.raises(PreconditionError, match="is not a file rehost can move"):
        backing_chain(Shell(), str(tmp_path / "disk"), "qcow2")
