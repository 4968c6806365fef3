"""One rehost at a time per campaign: a second `run` (or resume, confirm, rollback) on the same
campaign is refused with the name of the process working on it, and a SIGKILLed rehost leaves
no lock behind. Real `rehost` processes; the hosts are libvirt's test driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehost.core.lock import CampaignBusy, CampaignLock, holder
from tests.campaign_helpers import rehost
from tests.test_reports import SITE

# a site plugin that stops the campaign at its first stage until its stdin closes, so the test
# knows (without guessing at times) that `rehost run` is in the middle of its work
HOLD = '''
import sys
from rehost.hooks import hookimpl

@hookimpl
def rehost_stage_start(stage, vm, ctx):
    if stage == "preflight":
        print("HOLDING", flush=True)
        sys.stdin.read()
'''


@pytest.fixture
def site(tmp_path: Path) -> Path:
    empty = tmp_path / "empty-node.xml"
    empty.write_text("<node></node>")
    (tmp_path / "hold.py").write_text(HOLD)
    (tmp_path / "abiquo.password").write_text("pw\n")
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(empty=empty) + '\n[plugins]\nfiles = ["hold.py"]\n')
    return path


@pytest.fixture
def running(site: Path) -> Iterator[subprocess.Popen[str]]:
    """A real `rehost run` held inside its preflight stage."""
    proc = subprocess.Popen([sys.executable, "-m", "rehost.core.cli", "run", "-c", str(site)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "HOLDING" in line:
            break
    else:
        proc.wait()
        raise AssertionError("rehost run never reached preflight:\n" + "".join(seen))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_second_rehost_on_the_same_campaign_is_refused_and_says_who_works_on_it(
        site: Path, running: subprocess.Popen[str]) -> None:
    journal = site.parent / "state" / "journal.sqlite"
    events_before = journal.stat().st_size
    for args in (["run"], ["resume"], ["confirm"], ["rollback", "--vm", "web01"]):
        res = rehost(*args, "-c", str(site))
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert res.stderr.startswith("rehost: error: another rehost is working on campaign "
                                     "'dc1' (pid "), res.stderr
        assert f"pid {running.pid} on " in res.stderr and "`rehost run`" in res.stderr
        assert "nothing was done" in res.stderr
    assert journal.stat().st_size == events_before

    # the read-only commands go on, and status names the process at work
    status = rehost("status", "-c", str(site))
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"in progress: `rehost run`, pid {running.pid} on ")
    active = json.loads(rehost("status", "-c", str(site), "--json").stdout)["active"]
    assert active["pid"] == running.pid and active["command"] == "rehost run"
    out = site.parent / "out"
    report = rehost("report", "-c", str(site), "--format", "json", "-o", str(out))
    assert report.returncode == 0, report.stderr
    assert json.loads((out / "report.json").read_text())["campaign"] == "dc1"


def test_a_killed_rehost_leaves_no_lock_behind(site: Path,
                                               running: subprocess.Popen[str]) -> None:
    os.killpg(running.pid, signal.SIGKILL)
    running.wait()
    state = site.parent / "state"
    assert holder(state) is None
    assert json.loads(rehost("status", "-c", str(site), "--json").stdout)["active"] is None
    res = rehost("confirm", "-c", str(site))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "nothing to confirm" in res.stdout
    # and the next command that changes things takes the lock again
    with CampaignLock(state, "dc1", "rehost resume"):
        assert holder(state)["command"] == "rehost resume"  # type: ignore[index]
        with pytest.raises(CampaignBusy, match=r"`rehost resume`"):
            CampaignLock(state, "dc1", "rehost run").acquire()
    assert holder(state) is None


HOLDER_WITH_CHILD = """
import os, sys
from rehost.core.lock import CampaignLock
CampaignLock(sys.argv[1], "dc1", "rehost run").acquire()
# the plainest way to start a command: it keeps every descriptor not marked close-on-exec
child = os.posix_spawnp("cat", ["cat"], os.environ, setsid=0)
print(child, flush=True)
sys.stdin.read()
"""


def test_a_child_left_behind_does_not_keep_the_lock(tmp_path: Path) -> None:
    """A command rehost started that outlives it (an ssh ControlMaster lingers) must not keep
    the campaign locked once rehost is gone: the lock's descriptor is not inherited."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER_WITH_CHILD, str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        assert holder(tmp_path)["pid"] == proc.pid  # type: ignore[index]
        proc.kill()
        proc.wait()
        os.kill(child, 0)  # the child is still there
        assert holder(tmp_path) is None
        with CampaignLock(tmp_path, "dc1", "rehost resume"):
            assert holder(tmp_path)["pid"] == os.getpid()  # type: ignore[index]
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_dead_rehosts_ssh_socket_folder_is_swept(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``rh-ssh-<pid>-*`` folders of processes that are gone (a SIGKILLed rehost) are removed
    when the next campaign starts; a live process's folder stays."""
    import subprocess
    import tempfile

    from rehost.core.campaign import _sweep_control_dirs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"rh-ssh-{gone.pid}-abc"
    alive = tmp_path / f"rh-ssh-{os.getpid()}-def"
    other = tmp_path / "rh-ssh-notapid-x"
    for d in (dead, alive, other):
        d.mkdir()
    _sweep_control_dirs()
    assert not dead.exists() and alive.exists() and other.exists()
