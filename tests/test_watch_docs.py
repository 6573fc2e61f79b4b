"""docs/watch.md's metrics table is the one `tcpwhy.watch.metrics.METRICS` defines."""

from __future__ import annotations

from pathlib import Path

from tcpwhy.watch.metrics import METRICS, metrics_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "watch.md"
START = "<!-- metrics table: generated from tcpwhy.watch.metrics.METRICS"
END = "<!-- end of metrics table -->"


def test_metrics_table_in_the_docs_is_generated_from_the_definitions() -> None:
    text = DOC.read_text()
    head = text.index(START)
    body = text[text.index("\n", head) + 1 : text.index(END)]
    assert body == metrics_table(), (
        "regenerate with: python -c 'from tcpwhy.watch.metrics "
        "import metrics_table; print(metrics_table())'"
    )


def test_every_defined_metric_is_served() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from tcpwhy.watch.metrics import Metrics

    text = generate_latest(Metrics(CollectorRegistry()).registry).decode()
    for s in METRICS:
        assert f"# TYPE {s.name} {s.type}" in text
