"""docs/diagnose.md's catalogue, generated from the code that it describes.

Two blocks: the rules in the order they run (each rule module's ``ORDER`` and the kinds it
registers with ``@rule``) and which lab scenario shows which kind (each scenario's ``finds``
and ``shows``). ``python docs/gen_diagnose_catalogue.py`` rewrites them; a test fails when the
page and the code disagree, so a new rule module or scenario shows up in the docs by itself.
"""

from __future__ import annotations

from tcpwhy.diagnose.registry import RULE_MODULES, load

RULES_BEGIN = "<!-- BEGIN GENERATED rules by docs/gen_diagnose_catalogue.py: do not edit -->"
RULES_END = "<!-- END GENERATED rules -->"
LAB_BEGIN = "<!-- BEGIN GENERATED lab by docs/gen_diagnose_catalogue.py: do not edit -->"
LAB_END = "<!-- END GENERATED lab -->"

WITHOUT_SCENARIO = {
    "injected-segment": "made only from captures at two points of a path; tested on the "
    "shipped middlebox-idle-reset-path pair with a segment forged into one capture "
    "(tests/test_pairing_injected.py)",
    "data-after-fin": "the general form, whose named cases (stale-keepalive, keepalive-race) "
    "have scenarios; pinned on the Zeek test traces (tests/test_diagnose_pinned.py)",
    "port-scan": "tested on synthesized captures with syn-flood (tests/test_syn_flood.py)",
    "request-retried": "shown by stale-keepalive and keepalive-race, beside their own finding",
}
"""Finding kinds no lab scenario declares, and why; any other kind needs a scenario."""


def kinds_by_module() -> dict[str, list[str]]:
    """Rule module -> the kinds it registers, modules in the order the rules run."""
    by: dict[str, list[str]] = {m: [] for m in RULE_MODULES}
    for kind, fn in load().items():
        by[fn.__module__.rpartition(".")[2]].append(kind)
    return by


def rules_block() -> str:
    import importlib

    lines = ["| order | module | finding kinds |", "|---|---|---|"]
    for module, kinds in kinds_by_module().items():
        order = importlib.import_module(f"tcpwhy.diagnose.{module}").ORDER
        lines.append(f"| {order} | `{module}` | {', '.join(kinds)} |")
    return "\n".join(lines) + "\n"


def lab_block() -> str:
    from tcpwhy.lab.runner import all_scenarios

    rank = {k: i for i, k in enumerate(k for ks in kinds_by_module().values() for k in ks)}
    scenarios = sorted(
        all_scenarios(),
        key=lambda s: (s.finds is None, rank.get(s.finds or "", len(rank)), s.name),
    )
    lines = ["| lab scenario | finding |", "|---|---|"]
    for s in scenarios:
        finding = s.finds or "nothing above info"
        lines.append(f"| {s.name} | {' '.join(x for x in (finding, s.shows) if x)} |")
    lines.append("")
    lines.append("Kinds without a scenario of their own:")
    lines.append("")
    for kind in sorted(WITHOUT_SCENARIO):
        lines.append(f"* `{kind}`: {WITHOUT_SCENARIO[kind]}.")
    return "\n".join(lines) + "\n"


def splice(text: str) -> str:
    """The page with both generated blocks replaced by the current ones."""
    from tcpwhy.generated import replace_blocks

    return replace_blocks(
        text, [(RULES_BEGIN, RULES_END, rules_block), (LAB_BEGIN, LAB_END, lab_block)]
    )
