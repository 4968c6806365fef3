"""The site config: errors name the key, secrets stay out of it, paths are relative to it;
and what the command line says about a missing or bad config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from rehost.abiquo.settings import SETTINGS, AbiquoSettings
from rehost.core.config import SiteConfig, load_config, parse_config, validate_plugin_settings
from rehost.core.errors import ConfigError
from rehost.core.types import PluginSettings

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


def settings_error(text: str, specs: list[PluginSettings], plugins: list[str]) -> str:
    cfg = parse_config(text, "/etc/rehost/site.toml")
    with pytest.raises(ConfigError) as err:
        validate_plugin_settings(cfg, specs, plugins)
    assert err.value.exit_code == 2
    return str(err.value)


def abiquo_error(text: str) -> str:
    return settings_error(text, [SETTINGS], ["abiquo"])


def abiquo_settings(text: str, path: str) -> AbiquoSettings:
    cfg = parse_config(text, path)
    settings = validate_plugin_settings(cfg, [SETTINGS], ["abiquo"])["abiquo"]
    assert isinstance(settings, AbiquoSettings)
    return settings


def test_a_small_config_has_sensible_defaults() -> None:
    cfg = parse_config(HOSTS, "/etc/rehost/site.toml")
    assert [h.name for h in cfg.sources()] == ["kvm05"]
    assert [h.name for h in cfg.targets()] == ["kvm06"]
    assert cfg.hosts["kvm05"].datastore == "/var/lib/virt"
    assert cfg.hosts["kvm06"].datastore == "/srv/virt"
    assert cfg.campaign.parallel == 1 and cfg.campaign.delete_backups is False
    assert cfg.storage.strategy == "tar" and cfg.allocation.strategy == "loadlevel"
    assert cfg.control.strategy == "abiquo" and cfg.control.options == {}
    assert cfg.sections == {} and cfg.plugins.settings == {}
    assert cfg.report.formats == ["html", "md", "json"]
    assert cfg.base_dir == Path("/etc/rehost")
    assert cfg.state_dir == Path("/etc/rehost/rehost-state")
    assert cfg.report_dir == Path("/etc/rehost/rehost-state/reports")


# -- errors name the key ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("[campaign]\nparalel = 2\n" + HOSTS, "unknown key campaign.paralel"),
    ("[ssh]\nidentity = 'k'\n" + HOSTS, "unknown key ssh.identity"),
    (HOSTS + "user = 'root'\n", "unknown key hosts.kvm06.user"),
    ("[storage]\nstrategy = 'scp'\noption = {}\n" + HOSTS, "unknown key storage.option"),
    ("[report]\nformat = ['md']\n" + HOSTS, "unknown key report.format"),
    ("[control]\nstrategy = 'abiquo'\noptons = {}\n" + HOSTS, "unknown key control.optons"),
    ("[plugins]\nblocks = ['x']\n" + HOSTS, "unknown key plugins.blocks"),
])
def test_an_unknown_key_is_named(text: str, expected: str) -> None:
    message = config_error(text)
    assert message.startswith(expected), message


def test_an_unknown_abiquo_key_is_named() -> None:
    message = abiquo_error(ABIQUO + "password_env = 'P'\nverfy_tls = false\n" + HOSTS)
    assert message.startswith("unknown key abiquo.verfy_tls for plugin 'abiquo' (known: "), message
    assert "verify_tls" in message and "password_env" in message


def test_an_unknown_section_is_kept_for_the_plugins_then_refused() -> None:
    cfg = parse_config("[plugin]\nfiles = []\n" + HOSTS, "/etc/rehost/site.toml")
    assert cfg.sections == {"plugin": {"files": []}}
    message = settings_error("[plugin]\nfiles = []\n" + HOSTS, [SETTINGS], ["abiquo"])
    assert message == ("unknown section [plugin] in /etc/rehost/site.toml (known: campaign, ssh, "
                       "hosts, storage, allocation, control, backup, plugins, report, abiquo)")


def test_a_section_a_plugin_claims_is_not_unknown() -> None:
    cfg = parse_config(ABIQUO + "password_env = 'P'\n" + HOSTS, "/etc/rehost/site.toml")
    assert set(cfg.sections) == {"abiquo"}
    assert set(validate_plugin_settings(cfg, [SETTINGS], ["abiquo"])) == {"abiquo"}


def test_a_top_level_key_that_is_no_table_is_named() -> None:
    assert config_error("mode = 'fast'\n" + HOSTS) == "mode must be a table, not 'fast'"


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
    ("[report]\nformats = 'md'\n" + HOSTS, "report.formats must be a list"),
    ("[report]\nformats = ['md', 3]\n" + HOSTS, "report.formats must list strings: item 2 is 3"),
    ("[control]\nstrategy = ''\n" + HOSTS, "control.strategy must not be empty"),
    ("[control]\noptions = []\n" + HOSTS, "control.options must be a table"),
    ("campaign = 3\n" + HOSTS, "campaign must be a table"),
    ("[hosts]\nkvm05 = 'x'\n", "hosts.kvm05 must be a table"),
    ("[hosts.kvm05]\nrole = 'source'\n", "missing key hosts.kvm05.address"),
    ("[hosts.kvm05]\naddress = 'a'\n", "missing key hosts.kvm05.role"),
    ("[hosts.kvm05]\naddress = ''\nrole = 'source'\n", "hosts.kvm05.address must not be empty"),
    ("[hosts.kvm05]\naddress = 'a'\nrole = 'source'\nssh_port = 70000\n",
     "hosts.kvm05.ssh_port must be at most 65535"),
    ("[campaign\n", "/etc/rehost/site.toml: not valid TOML"),
])
def test_a_wrong_value_names_the_key(text: str, expected: str) -> None:
    message = config_error(text)
    assert message.startswith(expected), message


@pytest.mark.parametrize(("text", "expected"), [
    ("[campaign]\nparallel = nan\n", "campaign.parallel must be a whole number, not nan"),
    ("[campaign]\nparallel = 1001\n", "campaign.parallel must be at most 1000, not 1001"),
    ("[campaign]\nparallel = 9223372036854775807\n", "campaign.parallel must be at most 1000"),
    ("[campaign]\nper_host_limit = -1\n", "campaign.per_host_limit must be 0 or more, not -1"),
    ("[campaign]\ntask_timeout = nan\n", "campaign.task_timeout must be a finite number"),
    ("[campaign]\npower_off_timeout = inf\n", "campaign.power_off_timeout must be a finite"),
    ("[campaign]\npower_off_timeout = -inf\n", "campaign.power_off_timeout must be a finite"),
    ("[campaign]\ntask_timeout = 0\n", "campaign.task_timeout must be more than 0, not 0"),
    ("[campaign]\ntask_timeout = 1e300\n", "campaign.task_timeout must be at most"),
    ("[ssh]\nconnect_timeout = 0\n", "ssh.connect_timeout must be more than 0"),
])
def test_absurd_numbers_are_refused(text: str, expected: str) -> None:
    message = config_error(text + HOSTS)
    assert message.startswith(expected), message


def test_every_wrong_value_is_named_one_a_line() -> None:
    message = config_error("[campaign]\nparallel = 0\ndelete_backups = 'yes'\n" + HOSTS)
    assert message.splitlines() == ["campaign.parallel must be more than 0, not 0",
                                    "campaign.delete_backups must be true or false, not 'yes'"]


def test_no_hosts_is_no_error_a_control_plane_may_discover_them() -> None:
    cfg = parse_config("[campaign]\nname = 'x'\n", "/etc/rehost/site.toml")
    assert cfg.hosts == {} and cfg.sources() == [] and cfg.targets() == []


def test_report_formats_are_not_checked_here() -> None:
    # the reporters present decide which formats exist
    cfg = parse_config("[report]\nformats = ['pdf']\n" + HOSTS, "/etc/rehost/site.toml")
    assert cfg.report.formats == ["pdf"]


def test_control_and_strategy_sections() -> None:
    cfg = parse_config("[control]\nstrategy = 'none'\n[control.options]\nwait = 3\n"
                       "[storage.options]\nchecksum = 'md5'\n" + HOSTS, "/etc/rehost/site.toml")
    assert cfg.control.strategy == "none" and cfg.control.options == {"wait": 3}
    assert cfg.storage.strategy == "tar" and cfg.storage.options == {"checksum": "md5"}


@pytest.mark.parametrize("role", ["src", "centos5", "Source", ""])
def test_role_is_source_or_target(role: str) -> None:
    message = config_error(HOSTS.replace('role = "source"', f'role = "{role}"'))
    assert message == f"hosts.kvm05.role must be source or target, not {role!r}"


# -- the Abiquo password stays out of the config ---------------------------------------------


def test_a_password_in_the_config_is_refused() -> None:
    message = abiquo_error(ABIQUO + 'password = "s3cret"\n' + HOSTS)
    assert message.startswith("abiquo.password:")
    assert "password_file" in message and "password_env" in message
    assert "s3cret" not in message


def test_a_refused_password_is_not_chained_into_a_traceback() -> None:
    # the pydantic error repeats the input: it must not travel with the ConfigError
    cfg = parse_config(ABIQUO + 'password = "s3cret"\n' + HOSTS, "/etc/rehost/site.toml")
    with pytest.raises(ConfigError) as err:
        validate_plugin_settings(cfg, [SETTINGS], ["abiquo"])
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_abiquo_needs_a_way_to_the_password() -> None:
    assert abiquo_error(ABIQUO + HOSTS) == ("abiquo: set password_file or password_env "
                                            "(plugin 'abiquo')")


def test_no_abiquo_section_means_no_abiquo_settings() -> None:
    """A site without [abiquo] is valid (another control plane may run it); the Abiquo
    control plane, when chosen, says what is missing."""
    from types import SimpleNamespace

    from rehost.abiquo import site

    cfg = parse_config(HOSTS, "/etc/rehost/site.toml")
    assert validate_plugin_settings(cfg, [SETTINGS], ["abiquo"]) == {}
    ctx = SimpleNamespace(settings=lambda name: None)
    with pytest.raises(ConfigError, match=r"needs the Abiquo API: add an \[abiquo\] section"):
        site.settings(ctx)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    (ABIQUO.replace("https://abiquo.example.com/api/", "abiquo.example.com")
     + "password_env = 'P'\n" + HOSTS, "abiquo.url must start with https://"),
    (ABIQUO + "password_env = 'P'\nversion = '3.0'\n" + HOSTS,
     "abiquo.version: Input should be '2.4' or '2.6' (plugin 'abiquo')"),
    (ABIQUO + "password_env = 'P'\nversion = 2.6\n" + HOSTS, "abiquo.version: "),
    (ABIQUO + "password_env = 'P'\nverify_tls = 'no'\n" + HOSTS, "abiquo.verify_tls: "),
    (ABIQUO + "password_env = 'P'\ntimeout = nan\n" + HOSTS, "abiquo.timeout: "),
    (ABIQUO + "password_env = 'P'\ntimeout = 0\n" + HOSTS, "abiquo.timeout: "),
    ("[abiquo]\nurl = 'https://a/api'\npassword_env = 'P'\n" + HOSTS,
     "missing key abiquo.user (plugin 'abiquo')"),
])
def test_abiquo_values_are_checked(text: str, expected: str) -> None:
    message = abiquo_error(text)
    assert message.startswith(expected), message
    assert message.endswith("(plugin 'abiquo')"), message


def test_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = abiquo_settings(ABIQUO + 'password_env = "REHOST_TEST_PW"\n' + HOSTS,
                               "/x/site.toml")
    assert settings.url == "https://abiquo.example.com/api"
    assert settings.version == "2.6" and settings.verify_tls and settings.timeout == 30.0
    monkeypatch.setenv("REHOST_TEST_PW", "from-the-environment")
    assert settings.password() == "from-the-environment"
    assert SETTINGS.secrets is not None
    assert SETTINGS.secrets(settings) == ["from-the-environment"]
    monkeypatch.delenv("REHOST_TEST_PW")
    with pytest.raises(ConfigError) as err:
        settings.password()
    assert str(err.value) == ("abiquo.password_env: environment variable REHOST_TEST_PW is "
                              "not set")
    assert SETTINGS.secrets(settings) == []  # a password it cannot read is no secret to hide
    monkeypatch.setenv("REHOST_TEST_PW", "")
    assert SETTINGS.secrets(settings) == []  # "" would redact every character


def test_password_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "abiquo.pw").write_text("from-a-file\n")
    site = tmp_path / "site.toml"
    site.write_text(ABIQUO + 'password_file = "secrets/abiquo.pw"\nca_file = "ca.pem"\n'
                    + HOSTS)
    cfg = load_config(site)
    settings = validate_plugin_settings(cfg, [SETTINGS], ["abiquo"])["abiquo"]
    assert isinstance(settings, AbiquoSettings)
    assert settings.password_file == str(tmp_path / "secrets" / "abiquo.pw")
    assert settings.ca_file == str(tmp_path / "ca.pem")
    assert settings.password() == "from-a-file"
    # read when needed, never kept in the config or the settings
    assert "from-a-file" not in repr(cfg) and "from-a-file" not in repr(settings)

    (tmp_path / "secrets" / "abiquo.pw").unlink()
    with pytest.raises(ConfigError) as err:
        settings.password()
    assert str(err.value).startswith("abiquo.password_file: cannot read ")
    assert "abiquo.pw" in str(err.value) and "No such file" in str(err.value)


# -- plugins' own settings -------------------------------------------------------------------


class MailSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    port: int = 25
    relay: str = "localhost"
    timeout: float = Field(default=10.0, gt=0)


MAIL = PluginSettings("site-mail", MailSettings, help="mail to the VMs' owners")


def test_plugin_settings_are_validated_by_the_plugins_model() -> None:
    text = HOSTS + "[plugins]\nfiles = []\n[plugins.site-mail]\nport = 2525\n"
    cfg = parse_config(text, "/etc/rehost/site.toml")
    assert cfg.plugins.files == [] and cfg.plugins.settings == {"site-mail": {"port": 2525}}
    settings = validate_plugin_settings(cfg, [MAIL], ["site-mail", "notify"])
    assert settings == {"site-mail": MailSettings(port=2525)}


def test_a_plugin_without_a_table_gets_its_defaults() -> None:
    cfg = parse_config(HOSTS, "/etc/rehost/site.toml")
    assert validate_plugin_settings(cfg, [MAIL], ["site-mail"]) == {
        "site-mail": MailSettings()}


@pytest.mark.parametrize(("table", "expected"), [
    ("port = 'x'", "plugins.site-mail.port: Input should be a valid integer, unable to parse "
                   "string as an integer (plugin 'site-mail')"),
    ("timeout = -1", "plugins.site-mail.timeout: Input should be greater than 0 "
                     "(plugin 'site-mail')"),
    ("prot = 25", "unknown key plugins.site-mail.prot for plugin 'site-mail' "
                  "(known: port, relay, timeout)"),
])
def test_a_bad_plugin_setting_names_the_plugin_and_the_key(table: str, expected: str) -> None:
    assert settings_error(HOSTS + f"[plugins.site-mail]\n{table}\n", [MAIL],
                          ["site-mail"]) == expected


@pytest.mark.parametrize(("text", "plugins", "expected"), [
    ("[plugins.notify]\nto = 'x'\n", ["site-mail", "notify"], "plugin 'notify' takes no settings"),
    ("[plugins.site-mial]\nport = 1\n", ["site-mail"],
     "[plugins.site-mial]: no plugin is named 'site-mial' (rehost plugins lists them)"),
])
def test_a_plugin_table_nobody_reads_is_refused(text: str, plugins: list[str],
                                                expected: str) -> None:
    assert settings_error(HOSTS + text, [MAIL], plugins) == expected


def test_base_dir_and_resolve_path(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(HOSTS)
    cfg = load_config(site)
    assert cfg.base_dir == tmp_path
    assert cfg.resolve_path("a/b") == str(tmp_path / "a" / "b")
    assert cfg.resolve_path("/abs") == "/abs"
    assert cfg.resolve_path(None) is None
    assert parse_config(HOSTS).base_dir == Path.cwd()
    assert SiteConfig("<test>").storage.strategy == "tar"


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
