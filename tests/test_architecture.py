"""The import rules of the plugin contract, read from the sources:

* a plugin (every built-in plugin module, the example site plugin) imports from rehost only
  the public module ``rehost.api``, the hook markers, its own package's modules, and a library
  made for it (the Abiquo client ``rehost.abiquo`` for the Abiquo plugins, the reporting
  helpers for reporters) — never another plugin's module, never the core's internals, never a
  private name;
* the core imports no Abiquo code and no plugin;
* the hook specifications import the types module only.

The checker is itself tested on sources that break each rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rehost.core.plugins import BUILTIN_PLUGINS

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_MODULES = {module for _, module in BUILTIN_PLUGINS}
#: what a plugin may import from rehost (a module, or a package and everything under it)
PLUGIN_MAY_USE = ("rehost.api", "rehost.hooks", "rehost.abiquo")
REPORTER_MAY_USE = (*PLUGIN_MAY_USE, "rehost.reports.collect", "rehost.reports.render",
                    "rehost.reports.model")


def module_file(module: str) -> Path:
    parts = module.removeprefix("rehost.").split(".")
    path = ROOT.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports(source: str, module: str) -> list[tuple[str, list[str]]]:
    """Every import in a module, also inside functions and ``if TYPE_CHECKING``: the module
    imported and the names taken from it (relative imports resolved against ``module``)."""
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[:-node.level]
                base = ".".join([*package, base] if base else package)
            out.append((base, [a.name for a in node.names]))
    return out


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def plugin_violations(source: str, module: str, allowed: tuple[str, ...]) -> list[str]:
    """What in a plugin module's source breaks the plugin import rules."""
    found = []
    for imported, names in imports(source, module):
        for name in [imported, *(f"{imported}.{n}" for n in names)]:
            if name in PLUGIN_MODULES and name != module and not module.startswith(name + "."):
                found.append(f"{module} imports the plugin {name}")
        own = imported.startswith(module + ".")  # a plugin package's own modules
        if imported.startswith("rehost") and not own and not _within(imported, allowed):
            if not (imported in PLUGIN_MODULES or any(
                    f"{imported}.{n}" in PLUGIN_MODULES for n in names)):
                found.append(f"{module} imports {imported}, which is not the public API")
        for n in names:
            if n.startswith("_") and imported.startswith("rehost"):
                found.append(f"{module} imports the private name {imported}.{n}")
    return found


def builtin_sources() -> list[tuple[str, str, tuple[str, ...]]]:
    out = []
    for module in sorted(PLUGIN_MODULES):
        allowed = REPORTER_MAY_USE if module.startswith("rehost.reports.") else PLUGIN_MAY_USE
        out.append((module, module_file(module).read_text(), allowed))
    return out


@pytest.mark.parametrize(("module", "source", "allowed"), builtin_sources(),
                         ids=[m for m, _, _ in builtin_sources()])
def test_a_builtin_plugin_uses_only_the_public_api(module: str, source: str,
                                                   allowed: tuple[str, ...]) -> None:
    assert plugin_violations(source, module, allowed) == []


def test_the_example_site_plugin_uses_only_rehost_api() -> None:
    path = ROOT / "examples" / "site-plugin" / "rehost_example_site" / "__init__.py"
    source = path.read_text()
    assert plugin_violations(source, "rehost_example_site", ("rehost.api",)) == []
    assert {m for m, _ in imports(source, "rehost_example_site")
            if m.startswith("rehost")} == {"rehost.api"}


def test_the_core_imports_no_abiquo_code_and_no_plugin() -> None:
    for path in sorted((ROOT / "core").glob("*.py")):
        module = f"rehost.core.{path.stem}"
        for imported, names in imports(path.read_text(), module):
            assert not _within(imported, ("rehost.abiquo", "rehost.plugins")), (
                f"{module} imports {imported}")
            assert "abiquo" not in imported.lower(), f"{module} imports {imported}"
            assert not [n for n in names if "abiquo" in n.lower()], f"{module}: {names}"


def test_no_core_code_branches_on_abiquo() -> None:
    for path in sorted((ROOT / "core").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.If, ast.IfExp, ast.While, ast.Assert)):
                test = ast.unparse(node.test).lower()
                assert "abiquo" not in test, f"{path.name}: if {test}"


def test_the_hook_specs_import_only_the_types_module() -> None:
    source = (ROOT / "hooks" / "specs.py").read_text()
    rehost_imports = {m for m, _ in imports(source, "rehost.hooks.specs")
                      if m.startswith("rehost")}
    assert rehost_imports == {"rehost.core.types", "rehost.hooks"}


def test_the_abiquo_library_imports_no_plugin() -> None:
    for path in sorted((ROOT / "abiquo").glob("*.py")):
        module = f"rehost.abiquo.{path.stem}"
        for imported, _ in imports(path.read_text(), module):
            assert not _within(imported, ("rehost.plugins",)), f"{module} imports {imported}"


# -- the checker catches what it is there for -------------------------------------------------


@pytest.mark.parametrize(("source", "says"), [
    ("from rehost.plugins.storage.scp import ScpCopy\n", "imports the plugin"),
    ("from rehost.plugins.storage import scp\n", "imports the plugin"),
    ("import rehost.plugins.abiquo\n", "imports the plugin"),
    ("from rehost.core.campaign import Campaign\n", "not the public API"),
    ("def f():\n    from rehost.core.hypervisor import Hypervisor\n", "not the public API"),
    ("from rehost.abiquo.site import _clients\n", "private name"),
    ("from rehost.api.datastore import _helper\n", "private name"),
])
def test_the_checker_finds_each_kind_of_breach(source: str, says: str) -> None:
    found = plugin_violations(source, "rehost.plugins.allocation.halt", PLUGIN_MAY_USE)
    assert found and says in found[0]


def test_the_checker_accepts_the_public_api() -> None:
    source = ("from rehost.api import DatastoreStrategy, hookimpl\n"
              "from rehost.abiquo.site import client\n")
    assert plugin_violations(source, "rehost.plugins.allocation.halt", PLUGIN_MAY_USE) == []
