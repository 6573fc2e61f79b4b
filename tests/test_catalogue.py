"""The registries describe themselves: rule order from each module's ORDER, each lab scenario's
finding kind from its declaration, and docs/diagnose.md's catalogue generated from both."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.diagnose import catalogue, registry
from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.diagnose.model import Severity
from tcpwhy.lab.runner import all_scenarios

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "diagnose.md"
DIAGNOSE = Path(registry.__file__).parent
LAB = Path(registry.__file__).parents[1] / "data" / "lab"


def test_docs_catalogue_is_generated_from_the_code() -> None:
    text = PAGE.read_text()
    assert catalogue.splice(text) == text, (
        "docs/diagnose.md is out of date: run python docs/gen_diagnose_catalogue.py"
    )
    script = REPO / "docs" / "gen_diagnose_catalogue.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rule_order_is_what_the_modules_declare() -> None:
    with_rule = sorted(
        p.stem for p in DIAGNOSE.glob("*.py") if re.search(r"^@rule\(", p.read_text(), re.M)
    )
    assert sorted(registry.RULE_MODULES) == with_rule, "a rule module without ORDER = N"
    orders = [importlib.import_module(f"tcpwhy.diagnose.{m}").ORDER for m in registry.RULE_MODULES]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    kinds = registry.load()
    assert {fn.__module__.rpartition(".")[2] for fn in kinds.values()} == set(registry.RULE_MODULES)
    # the order the rules run in: registration follows RULE_MODULES
    firsts = list(dict.fromkeys(fn.__module__.rpartition(".")[2] for fn in kinds.values()))
    assert firsts == list(registry.RULE_MODULES)


def test_two_modules_with_one_order_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a_rule", "b_rule"):
        (tmp_path / f"{name}.py").write_text("ORDER = 5\n")
    monkeypatch.setattr(registry, "__file__", str(tmp_path / "registry.py"))
    with pytest.raises(ImportError, match="share ORDER 5"):
        registry._rule_modules()


def test_every_kind_has_a_scenario_or_a_reason() -> None:
    kinds = set(registry.load())
    declared = {s.finds for s in all_scenarios() if s.finds is not None}
    assert declared <= kinds, declared - kinds
    assert kinds - declared == set(catalogue.WITHOUT_SCENARIO)


SCENARIOS = {s.name: s for s in all_scenarios()}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_shipped_recording_shows_the_declared_kind(name: str) -> None:
    scenario = SCENARIOS[name]
    report = diagnose_files([str(LAB / f"{name}.pcap")])
    got = {f.kind for f in report.findings}
    if scenario.finds is None:
        assert all(f.severity is Severity.INFO for f in report.findings), got
    else:
        assert scenario.finds in got


def test_claim_keys_are_an_enum() -> None:
    from types import SimpleNamespace

    diag = registry.Diag(SimpleNamespace(nstreams=3))  # type: ignore[arg-type]  # only its size
    diag.claim(0, registry.Claim.RST)
    assert diag.is_claimed(0, "rst") and not diag.is_claimed(0, registry.Claim.SYN)
    diag.claim_streams(np.array([1, 2]), "retrans")
    assert diag.claimed_mask(registry.Claim.RETRANS).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="'rts'"):
        diag.claim(0, "rts")
    with pytest.raises(ValueError, match="'sin'"):
        diag.is_claimed(0, "sin")


def test_rule_order_does_not_depend_on_what_was_imported_first() -> None:
    """A caller that imports a later rule's module for a helper before the engine loads the
    rules (a test, a script) must not change the order they run in: claims make it matter."""
    code = (
        "from tcpwhy.diagnose.simultaneous_close import crossed_fins\n"
        "from tcpwhy.diagnose.tls_truncation import KIND\n"
        "from tcpwhy.diagnose import registry\n"
        "mods = [fn.__module__.rpartition('.')[2] for fn in registry.load().values()]\n"
        "assert list(dict.fromkeys(mods)) == list(registry.RULE_MODULES), mods\n"
        "assert next(iter(registry.load())) == 'syn-flood'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
