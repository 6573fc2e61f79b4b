"""pyproject.toml against the code: the runtime dependencies are what the package imports, the
extras hold what only an option imports (and import it lazily), numba is within its bound."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tcpwhy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

IMPORTED_AS = {"prometheus-client": "prometheus_client", "dask": "distributed"}
"""Distributions whose import name is not their name."""
USED_THROUGH = {"setuptools": "numba.pycc"}
"""Dependencies tcpwhy does not import itself: the module that does, on its behalf."""
COMES_WITH = {"llvmlite": "numba", "markupsafe": "jinja2"}
"""Modules tcpwhy imports that a dependency installs (and needs itself)."""


def _requirements(names: list[str]) -> dict[str, Requirement]:
    reqs = (Requirement(r) for r in names)
    return {r.name.lower(): r for r in reqs if r.name != "tcpwhy"}


def _imports() -> tuple[dict[str, set[str]], set[str]]:
    """Third-party modules the package imports: {top-level name: files}, and the dotted names,
    plus those imported at module level (not inside a function, not only for type checking)."""
    where: dict[str, set[str]] = {}
    top_level: set[str] = set()
    for f in SRC.rglob("*.py"):
        tree = ast.parse(f.read_text())
        lazy: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or (
                isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            ):
                lazy.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Call)
                and ast.unparse(node.func).endswith("resources.files")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names = [str(node.args[0].value)]  # package data read from another package
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "tcpwhy":
                    continue
                where.setdefault(top, set()).add(name)
                if id(node) not in lazy:
                    top_level.add(top)
    return where, top_level


def _import_name(dist: str) -> str:
    return IMPORTED_AS.get(dist, dist.replace("-", "_"))


def test_runtime_dependencies_are_what_the_package_imports() -> None:
    runtime = _requirements(PYPROJECT["project"]["dependencies"])
    extras = {
        name
        for group in PYPROJECT["project"]["optional-dependencies"].values()
        for name in _requirements(group)
    }
    where, top_level = _imports()
    dotted = {n for names in where.values() for n in names}
    for dist in runtime:
        if dist in USED_THROUGH:
            assert USED_THROUGH[dist] in dotted, dist
        else:
            assert _import_name(dist) in where, f"{dist} is a dependency nothing imports"
    runtime_names = {_import_name(d) for d in runtime}
    runtime_names |= {m for m, dist in COMES_WITH.items() if dist in runtime}
    declared = runtime_names | {_import_name(d) for d in extras}
    assert set(where) <= declared, f"imported, not declared: {set(where) - declared}"
    # what only an extra provides is imported where the option needs it, never at start-up
    assert top_level <= runtime_names, top_level - runtime_names
    assert "psutil" not in runtime and "psutil" in extras  # analyze --workers only


def test_numba_is_within_its_tested_bound() -> None:
    """The bound is the newest numba the tests have passed with: the installed one must satisfy
    it (a newer numba installed by hand shows here first) and the bound must be an upper one."""
    numba = _requirements(PYPROJECT["project"]["dependencies"])["numba"]
    uppers = [s for s in numba.specifier if s.operator in ("<", "<=")]
    assert uppers, "numba needs an upper bound: tcpwhy's ahead-of-time build uses numba.pycc"
    assert numba.specifier.contains(version("numba")), (version("numba"), str(numba.specifier))
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"#.*pycc.*\n(#.*\n)*\s*\"numba>=", text, re.S), "say why the bound"
