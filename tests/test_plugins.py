"""The plugin manager: built-ins, site plugins (entry points and files), blocking, strategy
registries and `rehost plugins`. Every test builds its own plugin manager."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rehost.core.campaign import Campaign
from rehost.core.config import parse_config
from rehost.core.errors import ConfigError, PluginError
from rehost.core.model import StrategyRecord
from rehost.core.plugins import BUILTIN_PLUGINS, PluginManager, build_plugin_manager
from rehost.hooks import hookimpl

EXAMPLE_DIST = "rehost-example-site"


def example_version() -> str:
    return importlib.metadata.version(EXAMPLE_DIST)


def rehost_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rehost.core.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, check=False)


def storage_offer(*names: str) -> object:
    """An inline plugin offering storage strategies of the given names."""

    class Offer:
        @hookimpl
        def rehost_storage_strategies(self) -> list[StrategyRecord]:
            return [StrategyRecord("storage", n, f"test strategy {n}", dict) for n in names]

    return Offer()


SITE_PLUGIN_FILE = '''
from rehost.core.model import StrategyRecord
from rehost.hooks import hookimpl

@hookimpl
def rehost_storage_strategies():
    return [StrategyRecord("storage", "from-a-file", "a strategy from a plugin file", dict)]
'''


# -- built-ins and blocking ------------------------------------------------------------------


def test_builtins_are_registered_with_origin_builtin() -> None:
    manager = build_plugin_manager(entry_points=False)
    listing = {p.name: p for p in manager.listing()}
    assert list(listing) == [name for name, _ in BUILTIN_PLUGINS]
    for name, module in BUILTIN_PLUGINS:
        assert listing[name].origin == "builtin"
        assert listing[name].where == module
        assert listing[name].hooks, f"built-in {name} implements no hook"
    assert {"scp", "shared"} <= set(manager.strategies("storage"))
    assert {"halt", "loadlevel", "performance"} <= set(manager.strategies("allocation"))


def test_a_blocked_builtin_is_not_registered() -> None:
    manager = build_plugin_manager(block=["notify", "storage-scp"], entry_points=False)
    names = {p.name for p in manager.listing()}
    assert "notify" not in names and "storage-scp" not in names
    assert manager.blocked == {"notify", "storage-scp"}
    assert "scp" not in manager.strategies("storage")
    assert manager.pm.hook.rehost_notify.get_hookimpls() == []


def test_a_blocked_entry_point_is_not_loaded() -> None:
    manager = build_plugin_manager(block=["example-site"])
    assert "example-site" not in {p.name for p in manager.listing()}
    assert "site-rsync" not in manager.strategies("storage")


def test_the_installed_example_site_plugin_comes_from_its_entry_point() -> None:
    manager = build_plugin_manager()
    info = {p.name: p for p in manager.listing()}["example-site"]
    assert info.origin == "entry point"
    assert info.where == f"{EXAMPLE_DIST}=={example_version()}: rehost_example_site"
    assert info.hooks == ["rehost_storage_strategies"]
    record = manager.strategies("storage")["site-rsync"]
    assert record.plugin == "example-site"
    assert manager.strategy("storage", "site-rsync").factory.__name__ == "SiteRsync"


# -- strategies ------------------------------------------------------------------------------


def test_a_duplicate_strategy_name_is_an_error_naming_both_plugins() -> None:
    manager = build_plugin_manager(
        builtins=[], entry_points=False,
        extra=[(storage_offer("twin"), "first-site"), (storage_offer("twin"), "second-site")])
    with pytest.raises(PluginError) as err:
        manager.strategies("storage")
    message = str(err.value)
    assert "'twin'" in message and "first-site" in message and "second-site" in message


def test_a_strategy_named_like_a_builtin_one_is_an_error() -> None:
    manager = build_plugin_manager(entry_points=False, extra=[(storage_offer("scp"), "mine")])
    with pytest.raises(PluginError, match=r"'storage-scp'.*'mine'|'mine'.*'storage-scp'"):
        manager.strategies("storage")


def test_a_strategy_offer_that_is_not_a_record_is_an_error_naming_the_plugin() -> None:
    class Sloppy:
        @hookimpl
        def rehost_allocation_strategies(self) -> list[Any]:
            return [("allocation", "tuple", "not a record")]

    manager = build_plugin_manager(builtins=[], entry_points=False, extra=[(Sloppy(), "sloppy")])
    with pytest.raises(PluginError, match=r"'sloppy'.*not a StrategyRecord"):
        manager.strategies("allocation")


SITE = """
[campaign]
state_dir = "state"

[hosts.old]
address = "198.18.250.10"
role = "source"

[storage]
strategy = "{storage}"

[allocation]
strategy = "loadlevel"
"""


def test_an_unknown_configured_strategy_says_which_to_choose(tmp_path: Path) -> None:
    cfg_path = tmp_path / "site.toml"
    cfg_path.write_text(SITE.format(storage="rsynk"))
    cfg = parse_config(cfg_path.read_text(), str(cfg_path))
    manager = build_plugin_manager(entry_points=False)
    with pytest.raises(ConfigError) as err:
        Campaign(cfg, manager)
    assert str(err.value) == "unknown storage strategy 'rsynk': choose one of scp, shared, tar"
    assert err.value.exit_code == 2

    # the operator sees the same through the command line, with exit code 2
    res = rehost_cli("plan", "-c", str(cfg_path))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "unknown storage strategy 'rsynk': choose one of" in res.stderr
    assert "site-rsync" in res.stderr  # the installed site plugin's strategy is a choice


# -- plugin files ----------------------------------------------------------------------------


def test_a_plugin_file_named_in_the_site_config_is_loaded(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    plugin = tmp_path / "plugins" / "mysite.py"
    plugin.write_text(SITE_PLUGIN_FILE)
    cfg_path = tmp_path / "site.toml"
    cfg_path.write_text(SITE.format(storage="from-a-file")
                        + '\n[plugins]\nfiles = ["plugins/mysite.py"]\n')
    cfg = parse_config(cfg_path.read_text(), str(cfg_path))
    manager = build_plugin_manager(plugin_files=cfg.plugins.files, entry_points=False)
    info = {p.name: p for p in manager.listing()}["mysite"]
    assert info.origin == "file"
    assert info.where == str(plugin.resolve())
    assert manager.strategy("storage", "from-a-file").plugin == "mysite"
    ctx = Campaign(cfg, manager)  # the configured strategy comes from the file: accepted
    ctx.close()

    res = rehost_cli("plugins", "-c", str(cfg_path))
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith("mysite"))
    assert line.split()[1] == "file" and str(plugin.resolve()) in line
    assert "from-a-file" in res.stdout


def test_a_blocked_plugin_file_is_not_loaded(tmp_path: Path) -> None:
    plugin = tmp_path / "mysite.py"
    plugin.write_text(SITE_PLUGIN_FILE)
    manager = build_plugin_manager(plugin_files=[plugin], block=["mysite"], entry_points=False)
    assert "mysite" not in {p.name for p in manager.listing()}
    assert "from-a-file" not in manager.strategies("storage")


def test_a_missing_plugin_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plugin file .*nowhere\.py.* does not exist"):
        build_plugin_manager(plugin_files=[tmp_path / "nowhere.py"], entry_points=False)


@pytest.mark.parametrize("source", [
    "def broken(:\n",
    "import rehost_no_such_module_here\n",
    "raise RuntimeError('site plugin exploded')\n",
])
def test_a_broken_plugin_file_is_an_error_that_names_it(tmp_path: Path, source: str) -> None:
    plugin = tmp_path / "broken_site.py"
    plugin.write_text(source)
    with pytest.raises(PluginError) as err:
        build_plugin_manager(plugin_files=[plugin], entry_points=False)
    assert str(plugin) in str(err.value) and "failed to load" in str(err.value)


def test_a_misspelled_hook_is_an_error_that_names_plugin_and_hook(tmp_path: Path) -> None:
    plugin = tmp_path / "typo.py"
    plugin.write_text(
        "from rehost.hooks import hookimpl\n\n"
        "@hookimpl\n"
        "def rehost_vm_tranfser(vm, ctx):\n"
        "    return {}\n"
    )
    with pytest.raises(PluginError) as err:
        build_plugin_manager(plugin_files=[plugin], entry_points=False)
    message = str(err.value)
    assert "'typo'" in message and "rehost_vm_tranfser" in message
    assert "rehost_vm_transfer" in message  # what was meant


def test_a_hook_with_a_misspelled_argument_is_an_error_naming_the_plugin() -> None:
    class WrongArgument:
        @hookimpl
        def rehost_vm_transfer(self, vm: Any, context: Any) -> dict[str, Any]:
            return {}

    with pytest.raises(PluginError) as err:
        build_plugin_manager(builtins=[], entry_points=False,
                             extra=[(WrongArgument(), "wrong-argument")])
    assert "'wrong-argument'" in str(err.value) and "context" in str(err.value)


def test_a_broken_entry_point_is_an_error_that_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = importlib.metadata.EntryPoint(
        name="broken-site", value="rehost_no_such_site_module", group="rehost")
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [broken] if group == "rehost" else [])
    with pytest.raises(PluginError) as err:
        build_plugin_manager(builtins=[])
    assert "'broken-site'" in str(err.value) and "rehost_no_such_site_module" in str(err.value)


def test_two_plugins_with_one_name_are_an_error() -> None:
    with pytest.raises(PluginError, match="two plugins are named 'twin'"):
        build_plugin_manager(builtins=[], entry_points=False,
                             extra=[(storage_offer("a"), "twin"), (storage_offer("b"), "twin")])


# -- firstresult and trylast -----------------------------------------------------------------


def test_a_site_plugin_wins_over_a_trylast_builtin_whatever_the_order() -> None:
    """The built-in fence is trylast: a site plugin's fence answers first even when the site
    plugin was registered before the built-in (pluggy would otherwise call the latest first)."""
    called: list[str] = []

    class SiteFence:
        @hookimpl
        def rehost_fence(self, ctx: Any) -> dict[str, Any]:
            called.append("site")
            return {"by": "site"}

    manager = PluginManager()
    manager.register(SiteFence(), "site-fence", "in-process", "test")
    manager.load_builtins(["allocation"])
    ctx = object()  # the built-in would fail on it: it must not be called
    assert manager.hooks.fence(ctx).record("by") == "site"  # type: ignore[arg-type]
    assert called == ["site"]

    # and when the site plugin does not answer, the built-in does
    class Silent:
        @hookimpl
        def rehost_fence(self, ctx: Any) -> None:
            called.append("silent")

    manager2 = PluginManager()
    manager2.register(Silent(), "silent", "in-process", "test")
    manager2.load_builtins(["allocation"])
    with pytest.raises(AttributeError, match="control"):  # the built-in reads ctx.control
        manager2.hooks.fence(ctx)  # type: ignore[arg-type]
    assert called[-1] == "silent"


# -- `rehost plugins` ------------------------------------------------------------------------


def test_rehost_plugins_lists_plugins_strategies_and_origins() -> None:
    res = rehost_cli("plugins")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "plugins:"
    listed = lines[1:next(i for i, ln in enumerate(lines) if i and not ln.startswith(" "))]
    rows = {ln.split()[0]: ln for ln in listed}
    for name, module in BUILTIN_PLUGINS:
        assert rows[name].split()[1:] == ["builtin", module]
    site = rows["example-site"]
    assert "entry point" in site and f"{EXAMPLE_DIST}=={example_version()}" in site
    storage = lines[lines.index("storage strategies:") + 1:lines.index("allocation strategies:")]
    assert any(ln.split()[0] == "site-rsync" and "[example-site]" in ln for ln in storage)
    assert any(ln.split()[0] == "scp" and "[storage-scp]" in ln for ln in storage)


def test_rehost_plugins_json() -> None:
    res = rehost_cli("plugins", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert set(data) == {"plugins", "blocked", "strategies", "settings", "report_formats"}
    assert {s["name"] for s in data["strategies"]["control"]} >= {"abiquo"}
    assert data["settings"]["abiquo"]["section"] == "abiquo"
    assert "url" in data["settings"]["abiquo"]["keys"]
    assert set(data["report_formats"]) >= {"html", "md", "json"}
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["example-site"] == {
        "name": "example-site", "origin": "entry point",
        "where": f"{EXAMPLE_DIST}=={example_version()}: rehost_example_site",
        "hooks": ["rehost_storage_strategies"],
    }
    assert plugins["notify"]["origin"] == "builtin"
    assert "rehost_notify" in plugins["notify"]["hooks"]
    assert data["blocked"] == []
    storage = {s["name"]: s for s in data["strategies"]["storage"]}
    assert storage["site-rsync"]["plugin"] == "example-site"
    assert {s["name"] for s in data["strategies"]["allocation"]} >= {"halt", "loadlevel",
                                                                     "performance"}


def test_rehost_plugins_json_shows_what_the_site_config_blocks(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(SITE.format(storage="scp")
                   + '\n[plugins]\nblock = ["example-site", "allocation-halt"]\n')
    res = rehost_cli("plugins", "-c", str(cfg), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["blocked"] == ["allocation-halt", "example-site"]
    names = {p["name"] for p in data["plugins"]}
    assert "example-site" not in names and "allocation-halt" not in names
    assert "site-rsync" not in {s["name"] for s in data["strategies"]["storage"]}
    assert "halt" not in {s["name"] for s in data["strategies"]["allocation"]}


# -- the typed contract: strategies, report formats ---------------------------------------------


def test_a_strategy_that_is_not_of_its_kind_is_an_error_naming_the_plugin(tmp_path: Path) -> None:
    cfg_path = tmp_path / "site.toml"
    cfg_path.write_text(SITE.format(storage="loose"))
    cfg = parse_config(cfg_path.read_text(), str(cfg_path))
    manager = build_plugin_manager(entry_points=False, extra=[(storage_offer("loose"), "loose")])
    ctx = Campaign(cfg, manager)
    try:
        with pytest.raises(PluginError) as err:
            ctx.storage  # noqa: B018 - building it is the point
    finally:
        ctx.close()
    assert str(err.value) == ("plugin 'loose': its storage strategy 'loose' is a dict, not a "
                              "rehost.core.strategies.StorageStrategy "
                              "(rehost.api.StorageStrategy)")


REPORTER_FILE = '''
from pathlib import Path
from rehost.api import hookimpl

@hookimpl
def rehost_report_formats():
    return ["csv"]

@hookimpl
def rehost_report(ctx, outdir, formats):
    if "csv" not in formats:
        return []
    Path(outdir).mkdir(parents=True, exist_ok=True)
    path = Path(outdir) / "report.csv"
    rows = ["name,status"] + [f"{r['name']},{r['status']}" for r in ctx.journal.vm_rows()]
    path.write_text("\\n".join(rows) + "\\n")
    return [str(path)]
'''


def test_a_site_reporter_brings_its_format(tmp_path: Path) -> None:
    (tmp_path / "csvreport.py").write_text(REPORTER_FILE)
    cfg_path = tmp_path / "site.toml"
    plugins = '\n[plugins]\nfiles = ["csvreport.py"]\n'
    cfg_path.write_text(SITE.format(storage="scp") + '\n[report]\nformats = ["csv", "md"]\n'
                        + plugins)
    cfg = parse_config(cfg_path.read_text(), str(cfg_path))
    ctx = Campaign(cfg, build_plugin_manager(plugin_files=cfg.plugins.files,
                                             entry_points=False))
    try:
        assert ctx.hooks.report_formats() == ["md", "html", "json", "csv"]
        paths = ctx.hooks.report(ctx, str(tmp_path / "out"), ["csv"])
    finally:
        ctx.close()
    assert paths == [str(tmp_path / "out" / "report.csv")]
    assert Path(paths[0]).read_text() == "name,status\n"

    # without the reporter, the format is a configuration error that says what there is
    cfg_path.write_text(SITE.format(storage="scp") + '\n[report]\nformats = ["csv"]\n')
    cfg = parse_config(cfg_path.read_text(), str(cfg_path))
    with pytest.raises(ConfigError) as err:
        Campaign(cfg, build_plugin_manager(entry_points=False))
    assert str(err.value) == "report.formats: 'csv' is not a format: choose md, html, json"

    # `rehost report --format` offers the site's format too
    cfg_path.write_text(SITE.format(storage="scp") + plugins)
    res = rehost_cli("report", "-c", str(cfg_path), "--format", "csv", "-o", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r" / "report.csv").read_text() == "name,status\n"
    res = rehost_cli("report", "-c", str(cfg_path), "--format", "pdf")
    assert res.returncode == 2
    assert "--format 'pdf': choose md, html, json, csv" in res.stderr
