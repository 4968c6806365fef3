"""The backup before the window, without a lab: the ``[backup]`` section and its errors, the
strategies offered, and the ``ssh`` strategy's copy run for real on this machine (the backup
host is the source host: the stream goes through the digest at both ends, into tar)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rehost.core.config import parse_config
from rehost.core.errors import ConfigError, PreconditionError
from rehost.core.model import VM, Disk, Host
from rehost.core.plugins import build_plugin_manager
from rehost.core.remote import Shell
from rehost.core.strategies import BackupStrategy, NoBackup
from rehost.core.types import BackupDisksResult

MIB = 1 << 20


def build(options: dict[str, Any]) -> BackupStrategy:
    manager = build_plugin_manager(entry_points=False)
    built = manager.build_strategy("backup", "ssh", options)
    assert isinstance(built, BackupStrategy)
    return built


def test_the_backup_section_defaults_to_none_and_refuses_unknown_keys() -> None:
    assert parse_config("").backup.strategy == "none"
    cfg = parse_config('[backup]\nstrategy = "ssh"\n[backup.options]\ndir = "/b"\n')
    assert (cfg.backup.strategy, cfg.backup.options) == ("ssh", {"dir": "/b"})
    with pytest.raises(ConfigError, match=r"unknown key backup\.strateg \(known keys in "
                                          r"\[backup\]: options, strategy\)"):
        parse_config('[backup]\nstrateg = "ssh"\n')


@pytest.mark.parametrize(("options", "message"), [
    ({}, "missing key backup.options.dir"),
    ({"dir": "relative"}, "backup.options.dir must be an absolute path, not 'relative'"),
    ({"dir": "/"}, "backup.options.dir must not be /"),
    ({"dir": "/b", "keep": "yes"}, "backup.options.keep must be true or false, not 'yes'"),
    ({"dir": "/b", "checksum": "sha256"}, "backup.options.checksum: choose md5 or sha1"),
    ({"dir": "/b", "timeout": 0}, "backup.options.timeout must be a number of seconds"),
    ({"dir": "/b", "hots": "x"}, "unknown key backup.options.hots for strategy 'ssh'"),
])
def test_wrong_options_of_the_ssh_strategy_are_refused(options: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(options)
    assert message in str(err.value)


def test_the_strategies_are_offered_and_listed_and_an_unknown_one_is_refused() -> None:
    manager = build_plugin_manager(entry_points=False)
    assert set(manager.strategies("backup")) >= {"none", "ssh"}
    assert isinstance(manager.build_strategy("backup", "none", {}), NoBackup)
    with pytest.raises(ConfigError, match="unknown backup strategy 'tape': choose one of "):
        manager.strategy("backup", "tape")
    out = subprocess.run([sys.executable, "-m", "rehost.core.cli", "plugins"],
                         capture_output=True, text=True, check=True).stdout
    assert "backup strategies:" in out and "\n  ssh " in out
    vm = VM(name="web", uuid="u")
    skipped = NoBackup().backup(vm, SimpleNamespace())  # type: ignore[arg-type]
    assert skipped.skipped and "no backup" in skipped.skipped


def local_ctx() -> Any:
    hosts = {"src": Host(name="src", address="127.0.0.1", role="source")}
    return SimpleNamespace(config=SimpleNamespace(hosts=hosts), shell=lambda h: Shell(name=h),
                           host=lambda h: hosts[h])


def sparse_disk(path: Path, seed: int) -> str:
    with open(path, "wb") as f:
        f.truncate(16 * MIB)
        for block in (0, 7, 15):
            f.seek(block * MIB)
            f.write(hashlib.sha256(f"{seed}:{block}".encode()).digest() * 4096)
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_the_ssh_strategy_copies_each_disk_sparse_and_checked_and_again_on_resume(
        tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = tmp_path / "a" / "disk.img", tmp_path / "b" / "disk.img"
    sums = {str(one): sparse_disk(one, 1), str(two): sparse_disk(two, 2)}
    vm = VM(name="web 01; touch pwned $(id) `id`", uuid="u", source_host="src",
            disks=[Disk(target="vda", source=str(one)), Disk(target="vdb", source=str(two))])
    dest = tmp_path / "backups"
    strategy = build({"host": "source", "dir": str(dest)})
    for _ in range(2):  # a resumed campaign runs the stage again: the copies are replaced
        made = strategy.backup(vm, local_ctx())
        assert isinstance(made, BackupDisksResult) and made.strategy == "ssh"
        # two disks of the same file name do not collide
        assert [Path(b.location).name for b in made.backups] == ["vda-disk.img", "vdb-disk.img"]
        for b in made.backups:
            copy = Path(b.location)
            assert copy.parent == dest / vm.name
            assert hashlib.sha1(copy.read_bytes()).hexdigest() == sums[b.path]
            assert b.size == 16 * MIB and b.algorithm == "sparse-sha1" and b.checksum
            assert os.stat(copy).st_blocks * 512 < 4 * MIB  # the holes stayed holes
        assert sorted(p.name for p in (dest / vm.name).iterdir()) == [
            "vda-disk.img", "vdb-disk.img"]  # no half copy left
    # the disks themselves were only read
    assert {p: hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in sums} == sums


def test_a_location_that_cannot_be_written_stops_the_vm_saying_so(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    sparse_disk(disk, 3)
    dest = tmp_path / "backups"
    dest.mkdir()
    (dest / "web").write_text("a file where the VM's folder goes\n")
    vm = VM(name="web", uuid="u", source_host="src",
            disks=[Disk(target="vda", source=str(disk))])
    with pytest.raises(PreconditionError) as err:
        build({"dir": str(dest)}).backup(vm, local_ctx())
    text = str(err.value)
    assert text.startswith(f"web: the backup to src:{dest}/web failed: mkdir: ")
    assert text.endswith("Not a directory: nothing was changed")
    for name in ("..", "a/b", ""):
        with pytest.raises(PreconditionError, match="cannot name a folder"):
            build({"dir": str(dest)}).backup(VM(name=name, uuid="u", source_host="src",
                                                 disks=vm.disks), local_ctx())


def test_the_plugin_guide_backup_strategy_runs(tmp_path: Path) -> None:
    guide = (Path(__file__).parents[1] / "docs" / "plugin-guide.md").read_text()
    section = guide[guide.index("### 4.3 A backup strategy"):]
    start = section.index("```python\n") + 10
    code = section[start:section.index("\n```", start)]
    plugin = tmp_path / "next_to_disk.py"
    plugin.write_text(code)
    manager = build_plugin_manager(entry_points=False, plugin_files=[plugin])
    strategy = manager.build_strategy("backup", "next-to-disk", {"keep": False})
    disk = tmp_path / "disk.img"
    want = sparse_disk(disk, 4)
    vm = VM(name="web", uuid="u", source_host="src",
            disks=[Disk(target="vda", source=str(disk))])
    made = strategy.backup(vm, local_ctx())
    assert isinstance(made, BackupDisksResult)
    copy = Path(made.backups[0].location)
    assert hashlib.sha1(copy.read_bytes()).hexdigest() == want
    assert strategy.cleanup(vm, local_ctx(), made) == [f"removed {copy}"]
    assert not copy.exists()
