"""The fast preflight, without the lab and without timing anything: each host is asked once
(its facts in one ssh command, its disks' sizes in one more), the hosts at once, and every
finding says what the checks one after the other said."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from loguru import logger

from rehost.core.errors import HypervisorError, RemoteError
from rehost.core.facts import read_host
from rehost.core.model import VM, Disk, Finding, Host, HostFacts, StrategyRecord
from rehost.core.remote import FileStat, Shell
from rehost.hooks import hookimpl
from rehost.plugins import preflight
from rehost.plugins.storage.scp import ScpCopy
from rehost.plugins.storage.tar import TarSparseCopy
from tests.test_pipeline import unused

# -- one command: the same answers and errors as the separate commands ----------------------


def test_one_command_reads_the_release_and_the_free_space(tmp_path: Path) -> None:
    sh = Shell()
    read = read_host(sh, str(tmp_path))
    assert read.free_bytes is not None
    assert abs(read.free_bytes - sh.free_space(str(tmp_path))) < 64 << 20
    if Path("/etc/redhat-release").exists():
        assert read.release == Path("/etc/redhat-release").read_text().strip().splitlines()[0]
    else:  # PRETTY_NAME of os-release, as the separate commands read it
        pretty = next(line.split("=", 1)[1].strip().strip('"')
                      for line in Path("/etc/os-release").read_text().splitlines()
                      if line.startswith("PRETTY_NAME="))
        assert read.release == pretty
    assert read_host(sh, None).free_bytes is None


def test_a_missing_datastore_fails_as_df_did(tmp_path: Path) -> None:
    sh = Shell()
    missing = str(tmp_path / "no such datastore")
    with pytest.raises(RemoteError) as separate:
        sh.free_space(missing)
    with pytest.raises(RemoteError) as together:
        read_host(sh, missing)
    assert str(together.value) == str(separate.value)
    assert together.value.argv == ["df", "-P", "-k", "--", missing]


@pytest.mark.parametrize("name", ["plain", "with space", "-leading dash", "new\nline",
                                  "quote'\"$(touch x)"])
def test_probe_paths_says_what_exists_and_stat_say(tmp_path: Path, name: str) -> None:
    sh = Shell()
    present = tmp_path / name
    present.write_bytes(b"x" * 5000)
    os.truncate(present, 1 << 30)  # sparse: size and allocated differ
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    paths = [str(present), str(tmp_path / (name + "_BACK")), str(dangling), str(tmp_path)]
    found = sh.probe_paths(paths)
    assert set(found) == set(paths)
    for p in paths:
        assert (found[p] is not None) == sh.exists(p), p
        if found[p] is not None:
            assert found[p] == sh.stat(p), p
    assert sh.probe_paths([]) == {}
    assert not (tmp_path / "x").exists()


# -- the preflight plugin against hosts that record what they are asked ----------------------


class FakeShell:
    def __init__(self, host: str, world: World) -> None:
        self.name = host
        self.world = world

    def _note(self, what: str) -> None:
        with self.world.lock:
            self.world.calls.append((self.name, what))

    def run(self, argv: list[str], timeout: float | None = None, **_: Any) -> Any:
        self._note(argv[0])
        if self.name in self.world.down:
            raise RemoteError(self.name, argv, "failed: ssh could not reach the host", 255,
                              "", "ssh: connect to host: No route to host")
        return SimpleNamespace(exit_code=0, stdout="", stderr="")

    def probe_paths(self, paths: list[str], **_: Any) -> dict[str, FileStat | None]:
        self._note("probe_paths")
        files = self.world.files.get(self.name, {})
        return {p: FileStat(p, files[p][0], files[p][1], 0, 0, "root", "root")
                if p in files else None for p in paths}

    # what the checks one by one use (the preflight must not need them here)
    def exists(self, path: str) -> bool:
        self._note("exists")
        files = self.world.files.get(self.name, {})
        return path in files or (self.name, path) in self.world.markers

    def stat(self, path: str) -> FileStat:
        self._note("stat")
        size, allocated = self.world.files[self.name][path]
        return FileStat(path, size, allocated, 0, 0, "root", "root")

    def write_text(self, path: str, text: str) -> None:
        self._note("write")
        self.world.markers.add((self.name, path))

    def remove(self, path: str) -> None:
        self._note("remove")
        self.world.markers.discard((self.name, path))


class FakeHypervisor:
    def __init__(self, host: str, world: World) -> None:
        self.host = host
        self.world = world

    def domains(self) -> list[Any]:
        return [SimpleNamespace(name=n) for n, h in self.world.placed.items() if h == self.host]

    def disks(self, name: str, inactive: bool = False) -> list[Disk]:
        with self.world.lock:
            self.world.calls.append((self.host, "disks"))
        if name in self.world.broken_vms:
            raise HypervisorError(f"libvirt on {self.host}: cannot find domain {name!r}")
        return [Disk(target="vda", source=f"/var/lib/virt/{name}-disk0", format="raw")]


class World:
    """Three hosts (two sources, one target) and what they were asked, by whom."""

    def __init__(self, *, down: set[str] | None = None, no_libvirt: set[str] | None = None,
                 broken_vms: set[str] | None = None) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []
        self.facts_threads: dict[str, int] = {}
        self.down = down or set()
        self.no_libvirt = no_libvirt or set()
        self.broken_vms = broken_vms or set()
        # (host, path): separate datastores
        self.markers: set[tuple[str, str]] = set()
        self.placed = {"web": "c5-a", "db": "c5-a", "mail": "c5-b"}
        self.files = {
            "c5-a": {"/var/lib/virt/web-disk0": (256 << 20, 8 << 20),
                     "/var/lib/virt/db-disk0": (128 << 20, 4 << 20)},
            "c5-b": {"/var/lib/virt/mail-disk0": (64 << 20, 2 << 20)},
        }
        # every reachable host reads its facts at the same time, or none gets past here
        up = 3 - len(self.down)
        self.together = threading.Barrier(up, timeout=20) if up > 1 else None

    def asked(self, host: str, what: str) -> int:
        return sum(1 for h, w in self.calls if (h, w) == (host, what))


class FakeCtx:
    def __init__(self, world: World, storage: Any) -> None:
        hosts = {"c5-a": Host("c5-a", "10.0.0.1", role="source"),
                 "c5-b": Host("c5-b", "10.0.0.2", role="source"),
                 "c6-a": Host("c6-a", "10.0.0.3", role="target")}
        self.world = world
        self.config = SimpleNamespace(
            hosts=hosts,
            sources=lambda: [h for h in hosts.values() if h.role == "source"],
            targets=lambda: [h for h in hosts.values() if h.role == "target"],
            campaign=SimpleNamespace(downtime_accepted=True),
            storage=SimpleNamespace(strategy=storage.name))
        self.journal = SimpleNamespace(get=lambda key, default=None: default)
        self.log = logger
        self.storage = storage
        self.control = SimpleNamespace(guard_target=lambda ctx, host: None)
        self.vms = [VM("web", "u1", "web", source_host="c5-a"),
                    VM("db", "u2", "db", source_host="c5-a"),
                    VM("mail", "u3", "mail", source_host="c5-b")]
        self._shells = {h: FakeShell(h, world) for h in hosts}

    def host(self, name: str) -> Host:
        return self.config.hosts[name]

    def shell(self, host: str) -> FakeShell:
        return self._shells[host]

    def hypervisor(self, host: str) -> FakeHypervisor:
        return FakeHypervisor(host, self.world)

    def facts(self, host: str, refresh: bool = False) -> HostFacts:
        w = self.world
        with w.lock:
            w.calls.append((host, "facts"))
            w.facts_threads[host] = threading.get_ident()
        if host in w.down:
            raise RemoteError(host, ["sh", "-c", "rehost-facts"], "failed: ssh could not "
                              "reach the host", 255)
        if w.together is not None:
            w.together.wait()
        if host in w.no_libvirt:
            raise HypervisorError(f"libvirt on {host}: cannot connect: Connection refused")
        return HostFacts(host, "CentOS release 5.11 (Final)", 5, "5.11", "0.8.2", "0.9.1",
                         4, 4096, "/var/lib/virt", 100 << 30)


def _run(ctx: FakeCtx) -> list[tuple[str, str, str]]:
    found: list[Finding] = preflight.rehost_preflight(ctx=ctx)  # type: ignore[arg-type]
    return [(f.severity, f.code, f.message) for f in found]


def test_each_host_is_asked_once_and_all_hosts_at_once() -> None:
    world = World()
    found = _run(FakeCtx(world, ScpCopy()))
    assert ("info", "space", "448 MiB needed on the targets, 102400 MiB free") in found
    assert ("info", "not-shared", "datastores are separate") in found
    assert not [f for f in found if f[0] == "critical"]
    for host in ("c5-a", "c5-b", "c6-a"):
        assert world.asked(host, "facts") == 1
    # the disks' sizes: one command per source host, nothing asked disk by disk
    assert world.asked("c5-a", "probe_paths") == world.asked("c5-b", "probe_paths") == 1
    assert not [c for c in world.calls if c[1] in ("stat", "run")]
    assert len(set(world.facts_threads.values())) == 3  # (the barrier let them through)
    # the shared-datastore probe: a marker written and removed on the first source, looked
    # for on the target
    assert world.asked("c5-a", "write") == world.asked("c5-a", "remove") == 1
    assert world.asked("c6-a", "exists") == 1 and not world.markers


def test_a_thin_copy_counts_the_allocated_bytes() -> None:
    found = _run(FakeCtx(World(), TarSparseCopy()))
    assert ("info", "space", "14 MiB needed on the targets, 102400 MiB free") in found


def test_a_host_ssh_cannot_reach_is_said_as_before() -> None:
    world = World(down={"c5-b"})
    found = _run(FakeCtx(world, ScpCopy()))
    # the message of the `true` the checks one by one ran first
    expected = RemoteError("c5-b", ["true"], "failed: ssh could not reach the host", 255, "",
                           "ssh: connect to host: No route to host")
    assert ("critical", "ssh", f"not reachable over ssh: {expected}") in found
    assert not [f for f in found if f[1] == "libvirt"]


def test_a_host_libvirt_cannot_reach_is_said_as_before() -> None:
    world = World(no_libvirt={"c6-a"})
    found = _run(FakeCtx(world, ScpCopy()))
    assert ("critical", "libvirt", "not reachable with libvirt: libvirt on c6-a: cannot "
            "connect: Connection refused") in found
    assert not [f for f in found if f[1] == "ssh"]
    assert not [f for f in found if f[1] in ("space", "shared", "not-shared")]  # no target


def test_a_vm_whose_disks_cannot_be_listed_is_said_as_before() -> None:
    world = World(broken_vms={"db"})
    found = _run(FakeCtx(world, ScpCopy()))
    assert ("critical", "disks", "cannot list disks: libvirt on c5-a: cannot find domain "
            "'db'") in found
    assert ("info", "space", "320 MiB needed on the targets, 102400 MiB free") in found


def test_a_disk_that_is_nowhere_is_said_as_before() -> None:
    world = World()
    del world.files["c5-b"]["/var/lib/virt/mail-disk0"]
    ctx = FakeCtx(world, ScpCopy())
    real_stat = FakeShell.stat

    def stat(self: FakeShell, path: str) -> FileStat:
        if path not in world.files.get(self.name, {}):
            raise RemoteError(self.name, ["stat", path], "exited with 1")
        return real_stat(self, path)

    FakeShell.stat = stat  # type: ignore[method-assign]
    try:
        found = _run(ctx)
    finally:
        FakeShell.stat = real_stat  # type: ignore[method-assign]
    # the probe knew it is missing; the storage strategy's own stat says why, as before
    assert [f for f in found if f[1] == "disk"] == [
        ("critical", "disk", "/var/lib/virt/mail-disk0: on c5-b: `stat "
         "/var/lib/virt/mail-disk0_BACK` exited with 1")]


# -- the campaign: a connection a finished thread opened goes to the next thread -------------

SITE = """
[campaign]
name = "speed"
state_dir = "{state}"
report_dir = "{reports}"

[hosts.old]
address = "198.18.250.10"
role = "source"
{uri}

[hosts.new]
address = "198.18.250.11"
role = "target"

[control]
strategy = "test-control"

[storage]
strategy = "test-storage"

[allocation]
strategy = "test-fence"

[report]
formats = []
"""


class Strategies:
    """Registers a strategy of each kind that is never asked anything."""

    @hookimpl
    def rehost_control_planes(self) -> list[StrategyRecord]:
        return [StrategyRecord("control", "test-control", "-", unused("control"))]

    @hookimpl
    def rehost_storage_strategies(self) -> list[StrategyRecord]:
        return [StrategyRecord("storage", "test-storage", "-", unused("storage"))]

    @hookimpl
    def rehost_allocation_strategies(self) -> list[StrategyRecord]:
        return [StrategyRecord("allocation", "test-fence", "-", unused("allocation"))]


def _campaign(tmp_path: Path, uri: str = "") -> Any:
    from rehost.core.campaign import Campaign
    from rehost.core.config import parse_config
    from rehost.core.plugins import build_plugin_manager

    site = SITE.format(state=tmp_path / "state", reports=tmp_path / "reports", uri=uri)
    manager = build_plugin_manager(builtins=[], entry_points=False,
                                   extra=[(Strategies(), "strategies")])
    return Campaign(parse_config(site, str(tmp_path / "site.toml")), manager)



def test_a_connection_left_by_a_finished_thread_is_taken_over(tmp_path: Path) -> None:
    ctx = _campaign(tmp_path, 'uri = "test:///default"')
    try:
        box: list[Any] = []
        hold, release = threading.Event(), threading.Event()

        def worker() -> None:
            box.append(ctx.hypervisor("old"))
            hold.set()
            release.wait(10)

        t = threading.Thread(target=worker)
        t.start()
        hold.wait(10)
        mine = ctx.hypervisor("old")
        assert mine is not box[0]  # the worker still runs: its connection stays its own
        release.set()
        t.join()
        t2 = threading.Thread(target=lambda: box.append(ctx.hypervisor("old")))
        t2.start()
        t2.join()
        assert box[1] is box[0]  # taken over from the thread that ended
        assert ctx.hypervisor("old") is mine
    finally:
        ctx.close()


def test_facts_of_several_hosts_are_read_at_once(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from rehost.core.hypervisor import Hypervisor

    ctx = _campaign(tmp_path)
    both = threading.Barrier(2, timeout=20)
    read: list[str] = []

    def facts(self: Hypervisor, shell: Shell, datastore: str | None = None) -> HostFacts:
        both.wait()  # the two hosts are read at the same time, or this breaks
        read.append(self.name)
        return HostFacts(self.name, "x", None, None, "1.0.0", "1.0.0", 1, 1, datastore, 1)

    monkeypatch.setattr(Hypervisor, "facts", facts)
    try:
        threads = [threading.Thread(target=ctx.facts, args=(h, True)) for h in ("old", "new")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(read) == ["new", "old"]
        assert ctx.facts("old").hostname == "old"  # kept: not read again
        assert sorted(read) == ["new", "old"]
    finally:
        ctx.close()


class Checks:
    @hookimpl
    def rehost_select_vms(self, ctx: Any) -> list[VM]:
        return [VM("ABQ_1", "1", "web01")]

    @hookimpl
    def rehost_preflight(self, ctx: Any) -> list[Finding]:
        return [Finding("critical", "friday", "it is Friday")]


def test_the_preflight_says_where_its_time_went_and_leaves_the_hooks_as_they_were(
        tmp_path: Path) -> None:
    from rehost.core.campaign import Campaign
    from rehost.core.config import parse_config
    from rehost.core.pipeline import PreflightFailed, _preflight
    from rehost.core.plugins import build_plugin_manager

    site = SITE.format(state=tmp_path / "state", reports=tmp_path / "reports", uri="")
    manager = build_plugin_manager(builtins=[], entry_points=False,
                                   extra=[(Strategies(), "strategies"), (Checks(), "checks")])
    ctx = Campaign(parse_config(site, str(tmp_path / "site.toml")), manager)
    impls = manager.pm.hook.rehost_preflight.get_hookimpls()
    before = [i.function for i in impls]
    said: list[str] = []
    sink = logger.add(lambda m: said.append(str(m)), level="INFO")
    try:
        with pytest.raises(PreflightFailed, match="it is Friday"):
            _preflight(ctx, None)
    finally:
        logger.remove(sink)
        ctx.close()
    assert [i.function for i in impls] == before
    line = next(m for m in said if "preflight in" in m)
    assert "checks of checks" in line and "select vms" in line
