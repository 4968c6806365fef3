"""The site config: errors name the key, secrets stay out of it, paths are relative to it;
and what the command line says about a missing or bad config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rehost.core.config import load_config, parse_config
from rehost.core.errors import ConfigError

HOSTS = """
[hosts.kvm05]
address = "198.18.250.5"
role = "source"

[hosts.kvm06]
address = "198.18.250.6"
role = "target"
datastore = "/srv/virt"
"""

ABIQUO = """
[abiquo]
url = "https://abiquo.example.com/api/"
user = "admin"
"""


def rehost_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rehost.core.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, check=False)


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "/etc/rehost/site.toml")
    assert err.value.exit_code == 2
    return str(err.value)


def test_a_small_config_has_sensible_defaults() -> None:
    cfg = parse_config(HOSTS, "/etc/rehost/site.toml")
    assert [h.name for h in cfg.sources()] == ["kvm05"]
    assert [h.name for h in cfg.targets()] == ["kvm06"]
    assert cfg.hosts["kvm05"].datastore == "/var/lib/virt"
    assert cfg.hosts["kvm06"].datastore == "/srv/virt"
    assert cfg.campaign.parallel == 1 and cfg.campaign.delete_backups is False
    assert cfg.storage.strategy == "scp" and cfg.allocation.strategy == "loadlevel"
    assert cfg.abiquo is None
    assert cfg.state_dir == Path("/etc/rehost/rehost-state")
    assert cfg.report_dir == Path("/etc/rehost/rehost-state/reports")


# -- errors name the key ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("[campaign]\nparalel = 2\n" + HOSTS, "unknown key campaign.paralel"),
    ("[ssh]\nidentity = 'k'\n" + HOSTS, "unknown key ssh.identity"),
    (HOSTS + "user = 'root'\n", "unknown key hosts.kvm06.user"),
    ("[storage]\nstrategy = 'scp'\noption = {}\n" + HOSTS, "unknown key storage.option"),
    ("[report]\nformat = ['md']\n" + HOSTS, "unknown key report.format"),
    ("[plugin]\nfiles = []\n" + HOSTS, "unknown section [plugin]"),
    (ABIQUO + "password_env = 'P'\nverfy_tls = false\n" + HOSTS, "unknown key abiquo.verfy_tls"),
])
def test_an_unknown_key_or_section_is_named(text: str, expected: str) -> None:
    message = config_error(text)
    assert message.startswith(expected), message


def test_an_unknown_key_lists_the_known_ones() -> None:
    message = config_error("[campaign]\nparalel = 2\n" + HOSTS)
    assert "parallel" in message and "state_dir" in message


@pytest.mark.parametrize(("text", "expected"), [
    ("[campaign]\nparallel = '2'\n" + HOSTS, "campaign.parallel must be a whole number"),
    ("[campaign]\nparallel = true\n" + HOSTS, "campaign.parallel must be a whole number"),
    ("[campaign]\nparallel = 0\n" + HOSTS, "campaign.parallel must be more than 0"),
    ("[campaign]\ndelete_backups = 'yes'\n" + HOSTS, "campaign.delete_backups must be true or"),
    ("[campaign]\npower_off_timeout = 'soon'\n" + HOSTS, "campaign.power_off_timeout must be a"),
    ("[campaign]\nvms = 'web01'\n" + HOSTS, "campaign.vms must be \"all\" or a list"),
    ("[campaign]\nvms = [1, 2]\n" + HOSTS, "campaign.vms must list VM names"),
    ("[ssh]\nstrict_host_keys = 1\n" + HOSTS, "ssh.strict_host_keys must be true or false"),
    (HOSTS + "ssh_port = '22'\n", "hosts.kvm06.ssh_port must be a whole number"),
    ("[storage]\nstrategy = 3\n" + HOSTS, "storage.strategy must be a string"),
    ("[storage]\noptions = 'fast'\n" + HOSTS, "storage.options must be a table"),
    ("[plugins]\nfiles = 'x.py'\n" + HOSTS, "plugins.files must be a list"),
    ("[plugins]\nfiles = [3]\n" + HOSTS, "plugins.files must"),
    ("[plugins]\nblock = [true]\n" + HOSTS, "plugins.block must"),
    ("[report]\nformats = ['pdf']\n" + HOSTS, "report.formats: 'pdf' is not a format"),
    ("campaign = 3\n" + HOSTS, "campaign must be a table"),
    ("[hosts]\nkvm05 = 'x'\n", "hosts.kvm05 must be a table"),
    ("[hosts.kvm05]\nrole = 'source'\n", "missing key hosts.kvm05.address"),
    ("[hosts.kvm05]\naddress = 'a'\n", "missing key hosts.kvm05.role"),
    ("[campaign]\nname = 'x'\n", "no hosts"),
    ("[campaign\n", "/etc/rehost/site.toml: not valid TOML"),
])
def test_a_wrong_value_names_the_key(text: str, expected: str) -> None:
    message = config_error(text)
    assert message.startswith(expected), message


@pytest.mark.parametrize("role", ["src", "centos5", "Source", ""])
def test_role_is_source_or_target(role: str) -> None:
    message = config_error(HOSTS.replace('role = "source"', f'role = "{role}"'))
    assert message == f"hosts.kvm05.role must be source or target, not {role!r}"


# -- the Abiquo password stays out of the config ---------------------------------------------


def test_a_password_in_the_config_is_refused() -> None:
    message = config_error(ABIQUO + 'password = "s3cret"\n' + HOSTS)
    assert message.startswith("abiquo.password:")
    assert "password_file" in message and "password_env" in message
    assert "s3cret" not in message


def test_abiquo_needs_a_way_to_the_password() -> None:
    assert config_error(ABIQUO + HOSTS) == "abiquo: set password_file or password_env"


@pytest.mark.parametrize(("text", "expected"), [
    (ABIQUO.replace("https://abiquo.example.com/api/", "abiquo.example.com")
     + "password_env = 'P'\n" + HOSTS, "abiquo.url must start with https://"),
    (ABIQUO + "password_env = 'P'\nversion = '3.0'\n" + HOSTS,
     "abiquo.version must be 2.4 or 2.6"),
    ("[abiquo]\nurl = 'https://a/api'\npassword_env = 'P'\n" + HOSTS, "missing key abiquo.user"),
])
def test_abiquo_values_are_checked(text: str, expected: str) -> None:
    assert config_error(text).startswith(expected)


def test_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_config(ABIQUO + 'password_env = "REHOST_TEST_PW"\n' + HOSTS, "/x/site.toml")
    assert cfg.abiquo is not None
    assert cfg.abiquo.url == "https://abiquo.example.com/api"
    monkeypatch.setenv("REHOST_TEST_PW", "from-the-environment")
    assert cfg.abiquo.password() == "from-the-environment"
    monkeypatch.delenv("REHOST_TEST_PW")
    with pytest.raises(ConfigError) as err:
        cfg.abiquo.password()
    assert str(err.value) == ("abiquo.password_env: environment variable REHOST_TEST_PW is "
                              "not set")


def test_password_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "abiquo.pw").write_text("from-a-file\n")
    site = tmp_path / "site.toml"
    site.write_text(ABIQUO + 'password_file = "secrets/abiquo.pw"\n' + HOSTS)
    cfg = load_config(site)
    assert cfg.abiquo is not None
    assert cfg.abiquo.password_file == str(tmp_path / "secrets" / "abiquo.pw")
    assert cfg.abiquo.password() == "from-a-file"
    assert "from-a-file" not in repr(cfg)  # read when needed, never kept in the config

    (tmp_path / "secrets" / "abiquo.pw").unlink()
    with pytest.raises(ConfigError) as err:
        cfg.abiquo.password()
    assert str(err.value).startswith("abiquo.password_file: cannot read ")
    assert "abiquo.pw" in str(err.value) and "No such file" in str(err.value)


def test_relative_paths_are_resolved_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc" / "rehost"
    folder.mkdir(parents=True)
    site = folder / "site.toml"
    site.write_text(
        '[campaign]\nstate_dir = "state"\nreport_dir = "../reports"\n'
        '[ssh]\nconfig = "ssh_config"\nknown_hosts = "~/known"\n'
        '[plugins]\nfiles = ["plugins/mine.py", "/opt/site/other.py"]\n'
        '[report]\ntemplate_dir = "templates"\n' + HOSTS)
    cfg = load_config(site)
    assert cfg.state_dir == folder / "state"
    assert cfg.report_dir == tmp_path / "etc" / "reports"
    assert cfg.ssh.config == str(folder / "ssh_config")
    assert cfg.ssh.known_hosts == str(Path("~/known").expanduser())
    assert cfg.plugins.files == [str(folder / "plugins" / "mine.py"), "/opt/site/other.py"]
    assert cfg.report.template_dir == str(folder / "templates")


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"site config .*nowhere\.toml.* does not exist"):
        load_config(tmp_path / "nowhere.toml")


# -- the command line ------------------------------------------------------------------------


def test_run_with_a_missing_config_exits_2(tmp_path: Path) -> None:
    res = rehost_cli("run", "-c", "missing.toml", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == "rehost: error: site config 'missing.toml' does not exist"
    assert res.stdout == ""
    assert not (tmp_path / "rehost-state").exists()


def test_run_with_an_unknown_key_exits_2_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[campaign]\nparalel = 4\n" + HOSTS)
    res = rehost_cli("run", "-c", "bad.toml", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("rehost: error: unknown key campaign.paralel")
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "rehost-state").exists()  # nothing was started


def test_run_without_a_config_is_a_usage_error(tmp_path: Path) -> None:
    res = rehost_cli("run", cwd=tmp_path)
    assert res.returncode == 2
    assert "Missing option '-c' / '--config'" in res.stderr


def test_help_explains_the_commands() -> None:
    res = rehost_cli("--help")
    assert res.returncode == 0
    assert "moves powered-off KVM VMs" in res.stdout
    commands = res.stdout.split("Commands:")[1]
    for command in ("demo", "lab", "plan", "run", "resume", "status", "confirm", "report",
                    "disks", "plugins"):
        assert f"\n  {command} " in commands, f"--help does not list {command}"

    run = rehost_cli("run", "--help")
    assert run.returncode == 0
    for words in ("Run the campaign", "-c, --config", "--vm NAME", "--parallel", "--dry-run",
                  "--delete-backups", "Exit code 0"):
        assert words in run.stdout, words
