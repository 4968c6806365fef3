"""Shell: hostile names and paths stay data, locally and over real ssh to a lab host.

Every test runs twice: on this machine (``Shell()``) and on lab host c5-a over ssh. Files are
made in a folder both sides can see (the lab host's datastore is a folder here), so what the
remote commands did is checked from here, with Python's own os and hashlib. Each hostile name
carries a command that would create a canary file if any shell ever ran it as code.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rehost.core.errors import RemoteError
from rehost.core.remote import Shell, SshOptions, quote_argv

# one random canary for the whole run: pytest-xdist's workers must collect the same test ids
# (tests/conftest.py draws it once, before the workers start)
CANARY = f"pwned-{os.environ.get('REHOST_TEST_CANARY') or uuid.uuid4().hex[:8]}"

#: Names a VM, a disk or an operator's typo could give a file (one path component each).
HOSTILE_NAMES = [
    "it's a disk",
    f"x'; touch {CANARY}; echo '",
    f"$(touch {CANARY})",
    f"`touch {CANARY}`",
    f"a;touch {CANARY}",
    f"a && touch {CANARY} || b",
    f"a | touch {CANARY}",
    f"> {CANARY}",
    "two\nlines",
    f"new\n touch {CANARY}\n",
    "-rf",
    "--help",
    "-",
    "*",
    "?[a-z]",
    '"double" \\back\\slash',
    "tab\there",
    "ünïcödé disk",
    "!bang $HOME ${IFS}",
]

#: Paths whose folders do not exist: a command substitution there would need a "/" to land.
def absolute_canary(root: str) -> str:
    return f"{root}/{CANARY}-abs"


@dataclass
class Target:
    """A shell and a folder it works in, with the same folder as this process sees it."""

    shell: Shell
    remote_dir: str
    local_dir: Path
    cwd: Path  # where a relative canary would land

    def path(self, name: str) -> str:
        return f"{self.remote_dir}/{name}"

    def here(self, name: str) -> Path:
        return self.local_dir / name

    def canaries(self) -> list[Path]:
        places = [self.local_dir, self.cwd, Path("/tmp"), Path.cwd()]
        found = [p / name for p in places for name in (CANARY, f"{CANARY}-abs")]
        return [p for p in found if p.exists()]


@pytest.fixture(scope="module")
def control_dir() -> Iterator[str]:
    """One shared ssh connection for the module's commands (a short path: socket limits)."""
    with tempfile.TemporaryDirectory(prefix="rh-ssh-") as d:
        yield d


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.lab)])
def target(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch, control_dir: str) -> Iterator[Target]:
    if request.param == "local":
        work = tmp_path / "work"
        work.mkdir()
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        t = Target(Shell(), str(work), work, cwd)
    else:
        lab = request.getfixturevalue("lab")
        host = lab.host("c5-a")
        layout = lab.layout("c5-a")
        remote_dir = f"{host['datastore']}/rehost-test-{uuid.uuid4().hex[:8]}"
        shell = Shell(host["address"], name="c5-a", timeout=60,
                      ssh=SshOptions(config=lab.data["ssh_config"], control_dir=control_dir))
        shell.run(["mkdir", "--", remote_dir])
        # root's home on the lab host is this machine's /root (only /root/.ssh is its own)
        t = Target(shell, remote_dir, layout.datastore_in_controller(remote_dir), Path("/root"))
    yield t
    assert t.canaries() == [], "an injected command ran"
    if request.param == "ssh":
        t.shell.run(["rm", "-rf", "--", t.remote_dir])
        t.shell.close()


def write(t: Target, name: str, data: bytes) -> None:
    t.here(name).write_bytes(data)


# -- hostile names -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[repr(n)[1:-1][:24] for n in HOSTILE_NAMES])
def test_hostile_name_survives_every_primitive(target: Target, name: str) -> None:
    sh = target.shell
    keep = target.here("keep-me")
    keep.write_bytes(b"a file a glob or an rm -rf would hit")
    data = os.urandom(70_000) + name.encode()
    path = target.path(name)

    sh.write_text(path, name)
    assert target.here(name).read_text() == name
    assert sh.read_text(path) == name
    write(target, name, data)

    assert sh.exists(path)
    st = sh.stat(path)
    assert (st.path, st.size) == (path, len(data))
    assert st.uid == os.stat(target.here(name)).st_uid
    for algorithm in ("md5", "sha1", "sha256"):
        assert sh.checksum(path, algorithm) == hashlib.new(algorithm, data).hexdigest(), algorithm
    assert sh.sample_digests(path, 65536, [1, 0]) == [
        hashlib.md5(data[65536:]).hexdigest(), hashlib.md5(data[:65536]).hexdigest()]

    back = path + "_BACK"
    sh.rename(path, back)
    assert not target.here(name).exists()
    assert target.here(name + "_BACK").read_bytes() == data
    assert not sh.exists(path) and sh.exists(back)

    sh.remove(back)
    assert not target.here(name + "_BACK").exists()
    assert keep.read_bytes().startswith(b"a file")
    assert sorted(os.listdir(target.local_dir)) == ["keep-me"]


@pytest.mark.parametrize("name", HOSTILE_NAMES[:8], ids=range(8))
def test_hostile_folder_in_a_path_that_does_not_exist(target: Target, name: str) -> None:
    """A substitution with an absolute canary path can only hide in a folder component."""
    payload = name.replace(CANARY, absolute_canary(str(target.local_dir)))
    missing = f"{target.remote_dir}/{payload}/disk"
    assert not target.shell.exists(missing)
    with pytest.raises(RemoteError):
        target.shell.stat(missing)
    with pytest.raises(RemoteError):
        target.shell.checksum(missing, "sha256")
    target.shell.remove(missing)  # rm -f of nothing is fine


def test_star_is_one_file_not_a_glob(target: Target) -> None:
    for name in ("a", "b", "*"):
        write(target, name, name.encode())
    target.shell.remove(target.path("*"))
    assert sorted(os.listdir(target.local_dir)) == ["a", "b"]
    assert target.shell.checksum(target.path("a"), "md5") == hashlib.md5(b"a").hexdigest()


def test_quote_argv_round_trips_through_a_shell_parser() -> None:
    for name in HOSTILE_NAMES:
        argv = ["stat", "-c", "%s %U", "--", name, f"/x/{name}"]
        assert shlex.split(quote_argv(argv)) == argv


def test_ssh_gets_the_remote_command_as_one_word() -> None:
    sh = Shell("192.0.2.1", ssh=SshOptions(config="/nonexistent/cfg"), port=2222)
    argv = sh.command_argv(["rm", "-f", "--", "a b; c"])
    assert argv[:3] == ["ssh", "-F", "/nonexistent/cfg"]
    assert argv[-2] == "--" and argv[-1] == "rm -f -- 'a b; c'"
    assert "root@192.0.2.1" in argv and "2222" in argv


# -- rename ------------------------------------------------------------------------------------


def test_rename_never_overwrites(target: Target) -> None:
    write(target, "disk", b"the user's disk")
    write(target, "disk_BACK", b"an older backup")
    with pytest.raises(RemoteError, match="would be overwritten") as caught:
        target.shell.rename(target.path("disk"), target.path("disk_BACK"))
    assert target.shell.name in str(caught.value)
    assert target.here("disk").read_bytes() == b"the user's disk"
    assert target.here("disk_BACK").read_bytes() == b"an older backup"


def test_rename_never_follows_a_dangling_link_onto_a_file(target: Target) -> None:
    write(target, "disk", b"the user's disk")
    os.symlink(target.here("elsewhere"), target.here("disk_BACK"))
    with pytest.raises(RemoteError):
        target.shell.rename(target.path("disk"), target.path("disk_BACK"))
    assert target.here("disk").read_bytes() == b"the user's disk"
    assert not target.here("elsewhere").exists()


def test_rename_finishes_a_half_done_rename_and_is_idempotent(target: Target) -> None:
    write(target, "disk", b"the user's disk")
    # the crash came between `ln` and `rm`: both names, one file
    os.link(target.here("disk"), target.here("disk_BACK"))
    target.shell.rename(target.path("disk"), target.path("disk_BACK"))
    assert not target.here("disk").exists()
    assert target.here("disk_BACK").read_bytes() == b"the user's disk"
    # and once more, as a resumed stage would
    target.shell.rename(target.path("disk"), target.path("disk_BACK"))
    assert target.here("disk_BACK").read_bytes() == b"the user's disk"


def test_rename_onto_itself_keeps_the_file(target: Target) -> None:
    write(target, "disk", b"the only copy")
    for other in ("disk", "./disk", "sub/../disk"):
        with pytest.raises(RemoteError, match="same path"):
            target.shell.rename(target.path("disk"), target.path(other))
    # the same entry through a symlinked folder: one link, so there is no "old name" to remove
    os.symlink(".", target.here("alias"))
    with pytest.raises(RemoteError, match="same directory entry"):
        target.shell.rename(target.path("disk"), target.path("alias/disk"))
    assert target.here("disk").read_bytes() == b"the only copy"


def test_rename_of_nothing_names_the_host_and_the_path(target: Target) -> None:
    with pytest.raises(RemoteError, match="does not exist") as caught:
        target.shell.rename(target.path("ghost"), target.path("ghost_BACK"))
    assert caught.value.host == target.shell.name
    assert target.path("ghost") in str(caught.value)


# -- checksums, space, errors, time limits -----------------------------------------------------


def test_checksums_of_a_sparse_file_agree_with_hashlib(target: Target) -> None:
    with open(target.here("sparse disk"), "wb") as f:
        f.truncate(8 << 20)
        f.seek(3 << 20)
        f.write(os.urandom(1 << 20))
    data = target.here("sparse disk").read_bytes()
    st = target.shell.stat(target.path("sparse disk"))
    assert st.size == 8 << 20 and st.allocated < st.size
    for algorithm in ("md5", "sha1", "sha256"):
        got = target.shell.checksum(target.path("sparse disk"), algorithm)
        assert got == hashlib.new(algorithm, data).hexdigest()
    with pytest.raises(ValueError, match="choose md5, sha1 or sha256"):
        target.shell.checksum(target.path("sparse disk"), "crc32")
    mib = 1 << 20
    assert target.shell.sample_digests(target.path("sparse disk"), mib, [0, 3, 7]) == [
        hashlib.md5(data[n * mib:(n + 1) * mib]).hexdigest() for n in (0, 3, 7)]


def test_sample_blocks_take_the_first_the_last_and_spread_between() -> None:
    from rehost.api.datastore import sample_blocks

    mib = 1 << 20
    assert sample_blocks(0, mib, 16) == []
    assert sample_blocks(5 * mib + 1, mib, 16) == [0, 1, 2, 3, 4, 5]
    assert sample_blocks(2048 * mib, mib, 5) == [0, 512, 1024, 1535, 2047]
    assert len(sample_blocks(2048 * mib, mib, 16)) == 16
    assert sample_blocks(2048 * mib, mib, 0) == []


def test_free_space_is_what_statvfs_says(target: Target) -> None:
    st = os.statvfs(target.local_dir)
    free = st.f_bavail * st.f_frsize
    assert abs(target.shell.free_space(target.remote_dir) - free) < max(free // 100, 64 << 20)


def test_errors_name_the_host_the_command_and_its_output(target: Target) -> None:
    with pytest.raises(RemoteError) as caught:
        target.shell.stat(target.path("no such disk"))
    err = caught.value
    assert err.host == target.shell.name and str(err).startswith(f"on {target.shell.name}: ")
    assert "stat" in str(err) and target.path("no such disk") in str(err)
    assert err.exit_code_remote == 1 and "No such file" in err.stderr
    result = target.shell.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    with pytest.raises(RemoteError, match="exited with 3"):
        target.shell.run(["sh", "-c", "exit 3"])


def test_time_limit_raises_remote_error(target: Target) -> None:
    t0 = time.monotonic()
    with pytest.raises(RemoteError, match=r"timed out after 0.5 s") as caught:
        target.shell.run(["sleep", "30"], timeout=0.5, check=False)
    assert time.monotonic() - t0 < 10
    assert caught.value.host == target.shell.name and "sleep 30" in str(caught.value)
    # a command that exits 124 by itself, at once, is not a timeout
    assert target.shell.run(["sh", "-c", "exit 124"], check=False, timeout=30).exit_code == 124


def test_a_command_that_does_not_exist(target: Target) -> None:
    with pytest.raises(RemoteError, match="rehost-no-such-command") as caught:
        target.shell.run(["rehost-no-such-command", "x"])
    assert caught.value.host == target.shell.name


def test_no_input_means_empty_input(target: Target) -> None:
    # a remote `cat` must not wait for a terminal that is not there
    assert target.shell.run(["cat"], timeout=20).stdout == ""
    assert target.shell.run(["cat"], input="a'b\n$(x)\n").stdout == "a'b\n$(x)\n"


@pytest.mark.lab
def test_unreachable_host_is_a_remote_error(lab: object) -> None:
    from rehost.lab.lab import LabState

    assert isinstance(lab, LabState)
    sh = Shell(lab.host("c5-a")["address"], port=1, name="c5-a:1",
               ssh=SshOptions(config=lab.data["ssh_config"], connect_timeout=3))
    with pytest.raises(RemoteError, match="ssh could not reach the host") as caught:
        sh.exists("/")
    assert caught.value.host == "c5-a:1"


# -- rehost's ssh connections die with it ------------------------------------------------------

HOLDER = """
import sys
from rehost.core.remote import Shell, SshOptions
sh = Shell(sys.argv[1], name="c5-a", ssh=SshOptions(config=sys.argv[2], control_dir=sys.argv[3]))
sh.run(["true"])  # the shared connection is up
print("ready", flush=True)
sh.run(["sleep", sys.argv[4]], timeout=600)  # a long remote command through it
"""


@pytest.mark.lab
def test_a_sigkilled_rehost_leaves_no_ssh_connection_behind(lab: object, tmp_path: Path) -> None:
    """Its shared connection is not a background ssh that outlives it (ControlPersist did
    that): rehost's own thread starts it and the kernel ends it with rehost. (A command that
    was already running on the host runs to its end: ssh gives no hangup without a terminal.)"""
    import signal
    import subprocess
    import sys

    from rehost.lab.lab import LabState

    assert isinstance(lab, LabState)
    marker = str(400 + os.getpid() % 500)  # a sleep no one else runs there
    control = tempfile.mkdtemp(prefix="rh-ssh-")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, lab.host("c5-a")["address"],
                             lab.data["ssh_config"], control, marker],
                            stdout=subprocess.PIPE, text=True)
    sh = Shell(lab.host("c5-a")["address"], name="c5-a",
               ssh=SshOptions(config=lab.data["ssh_config"]))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

        def remote_sleeps() -> list[str]:
            out = sh.run(["ps", "-eo", "args"]).stdout.splitlines()
            return [ln for ln in out if ln.strip() == f"sleep {marker}"]

        deadline = time.monotonic() + 30
        while not remote_sleeps():
            assert time.monotonic() < deadline, "the remote command never started"
            time.sleep(0.1)
        ps = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True,
                            check=True).stdout
        masters = [ln for ln in ps.splitlines() if "ControlMaster=yes" in ln and control in ln]
        assert len(masters) == 1  # the shared connection, a child of the holder

        proc.send_signal(signal.SIGKILL)  # rehost dies at once (not its process group)
        proc.wait()
        # its master connection goes with it
        deadline = time.monotonic() + 30
        while _alive(int(masters[0].split()[0])):
            assert time.monotonic() < deadline, "the ssh connection outlived rehost"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        import shutil

        shutil.rmtree(control, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


# -- quoting, for any name at all ------------------------------------------------------------


def test_quote_argv_keeps_every_argument_one_word_verbatim() -> None:
    """A property test: for arbitrary arguments (any characters but NUL), the command line
    ``quote_argv`` builds, run by a real POSIX shell, hands the program exactly those
    arguments — nothing runs but the intended command."""
    import subprocess

    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    printer = ["printf", "%s\\0"]

    # the shell's own hard cases, always tried (a random search may not draw a quote)
    @example(["it's", "$(touch pwned)", "a b", "'", "\\", "-n", "\n;id", "*"])
    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.text(st.characters(blacklist_characters="\x00",
                                          blacklist_categories=("Cs",)), max_size=40),
                    min_size=1, max_size=5))
    def check(args: list[str]) -> None:
        line = quote_argv([*printer, *args])
        out = subprocess.run(["sh", "-c", line], capture_output=True, check=True,
                             cwd=scratch).stdout
        assert out.split(b"\0")[:-1] == [a.encode() for a in args]

    # a broken quoting (the next test) runs redirections: they land in a scratch folder
    import shutil
    import tempfile

    scratch = tempfile.mkdtemp(prefix="rehost-quote-")
    try:
        check()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_property_test_catches_broken_quoting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shown once: with a quoting that forgets one character, the property fails."""
    import rehost.core.remote as remote

    def naive(argv: list[str]) -> str:
        return " ".join(f"'{a}'" if "'" not in a else a for a in argv)

    monkeypatch.setattr(remote, "quote_argv", naive)
    monkeypatch.setitem(globals(), "quote_argv", naive)
    with pytest.raises(Exception):  # noqa: B017 - any failure of the property will do
        test_quote_argv_keeps_every_argument_one_word_verbatim()
