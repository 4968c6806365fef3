"""Every hook is documented, reachable through the typed facade and called with keywords;
every per-VM stage has its hook (like datasette's test_plugins / test_docs)."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from rehost.core import plugins as plugins_module
from rehost.core.model import VM_STAGES
from rehost.core.plugins import Hooks
from rehost.hooks import PROJECT, specs

SPECS: dict[str, Callable[..., Any]] = {
    name: fn for name, fn in inspect.getmembers(specs, inspect.isfunction)
    if name.startswith(f"{PROJECT}_")
}

#: stages run by the core itself rather than by a ``rehost_vm_<stage>`` hook
CORE_STAGES: set[str] = set()  # every stage is a hook now (notify too)


def facade_calls() -> dict[str, list[ast.Call]]:
    """Every ``self._hook.<hook>`` used in :class:`Hooks`, by hook name, with the calls."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(Hooks)))
    used: dict[str, list[ast.Call]] = {}
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "_hook" and node.attr.startswith(f"{PROJECT}_")):
            call = calls.get(id(node))
            used.setdefault(node.attr, [])
            if call is not None:
                used[node.attr].append(call)
    return used


def test_the_specs_are_found() -> None:
    assert len(SPECS) >= 25
    assert "rehost_vm_transfer" in SPECS and "rehost_stage_error" in SPECS


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_hook_has_a_docstring(name: str) -> None:
    doc = inspect.getdoc(SPECS[name]) or ""
    assert len(doc) > 30, f"{name} has no real docstring"
    params = [p for p in inspect.signature(SPECS[name]).parameters if p != "self"]
    documented = doc.count(":param ")
    if documented:  # when a spec documents its arguments, it documents each of them
        for p in params:
            assert f":param {p}:" in doc, f"{name} does not document its argument {p}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_firstresult_hooks_say_the_first_answer_wins(name: str) -> None:
    opts = getattr(SPECS[name], f"{PROJECT}_spec", {})
    doc = inspect.getdoc(SPECS[name]) or ""
    if opts.get("firstresult"):
        assert "Stops at first non-None result" in " ".join(doc.split()), name


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_hook_is_reachable_through_the_typed_facade(name: str) -> None:
    used = facade_calls()
    if name.startswith(f"{PROJECT}_vm_"):
        stage = name.removeprefix(f"{PROJECT}_vm_")
        assert stage in VM_STAGES, f"{name} is not the hook of a stage the core runs"
        source = inspect.getsource(Hooks.vm_stage)
        assert 'f"rehost_vm_{stage}"' in source
        return
    assert name in used, f"{name} is not called through rehost.core.plugins.Hooks"


def test_the_facade_calls_hooks_with_their_spec_keywords_only() -> None:
    for name, calls in facade_calls().items():
        assert name in SPECS, f"Hooks uses {name}, which has no spec"
        spec_args = set(inspect.signature(SPECS[name]).parameters)
        for call in calls:
            assert not call.args, f"{name} is called with positional arguments"
            assert {k.arg for k in call.keywords} == spec_args, name


def test_no_hook_is_called_outside_the_facade() -> None:
    source = inspect.getsource(plugins_module)
    facade = inspect.getsource(Hooks)
    outside = source.replace(facade, "")
    assert f".hook.{PROJECT}_" not in outside and f"_hook.{PROJECT}_" not in outside


def test_the_stage_dispatcher_passes_keywords() -> None:
    tree = ast.parse(textwrap.dedent(inspect.getsource(Hooks.vm_stage)))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "_perform"]
    assert calls, "vm_stage does not call the stage hook"
    for call in calls:
        # the hook caller, then keywords only (cleanup's ``delete`` comes through **extra)
        assert len(call.args) == 1
        assert {k.arg for k in call.keywords} == {"vm", "ctx", None}


@pytest.mark.parametrize("stage", [s for s in VM_STAGES if s not in CORE_STAGES])
def test_every_vm_stage_has_a_hook(stage: str) -> None:
    name = f"{PROJECT}_vm_{stage}"
    assert name in SPECS, f"stage {stage} has no hook spec {name}"
    # cleanup is also told whether to delete the backups (run --delete-backups, confirm)
    extra = ["delete"] if stage == "cleanup" else []
    assert list(inspect.signature(SPECS[name]).parameters) == ["vm", "ctx", *extra]
    assert getattr(SPECS[name], f"{PROJECT}_spec")["firstresult"], \
        f"{name} performs one thing: it must be firstresult"


def test_every_vm_hook_is_a_stage() -> None:
    stages = {n.removeprefix(f"{PROJECT}_vm_") for n in SPECS if n.startswith(f"{PROJECT}_vm_")}
    assert stages == set(VM_STAGES) - CORE_STAGES
