"""Notebook display of findings and reports (`_repr_html_`): the HTML report's own verdict and
finding cards, byte for byte, styled by the page's CSS scoped under `.tcpwhy`, with every
capture string still text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tcpwhy
from tcpwhy.report.html import DETAILED, DETAILED_LADDERS, scope_css
from tests.test_html_report import _hostile, _tiled

LAB = Path(tcpwhy.__file__).parent / "data" / "lab"
WITH_FINDINGS = [
    "stale-keepalive.pcap",
    "refused.pcap",
    "zero-window.pcap",
    "tls-fatal-alert.pcap",
    "close-wait-leak.pcap",
]
ARTICLE = re.compile(r'<article class="finding[^"]*" id="(finding-\d+)".*?</article>', re.S)
VERDICT = re.compile(r'<p class="verdict[^"]*" id="verdict">.*?</p>', re.S)
RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")


def _analyze(*paths: Path) -> tcpwhy.Report:
    report = tcpwhy.analyze([str(p) for p in paths])
    assert isinstance(report, tcpwhy.Report)
    return report


def _articles(html: str) -> dict[str, str]:
    """The finding cards of some HTML, by their id (`finding-N`, N the place worst first)."""
    return {m.group(1): m.group(0) for m in ARTICLE.finditer(html)}


def _style(html: str) -> str:
    [css] = re.findall(r"<style>(.*?)</style>", html, re.S)
    return css


@pytest.mark.parametrize("name", WITH_FINDINGS)
def test_finding_card_is_the_page_card(name: str) -> None:
    report = _analyze(LAB / name)
    page = _articles(report.to_html())
    assert page, "the capture should have findings"
    shown: dict[str, str] = {}
    for f in report.findings:
        [(aid, card)] = _articles(f._repr_html_()).items()
        assert card == page[aid]
        assert f'data-kind="{f.kind}"' in card
        shown[aid] = card
    assert shown.keys() == page.keys()
    if name == "stale-keepalive.pcap":  # the example ladder is part of what is compared
        assert "<svg" in shown["finding-1"]


def test_two_point_card_is_the_page_card() -> None:
    report = _analyze(
        LAB / "middlebox-idle-reset-path.pcap", LAB / "middlebox-idle-reset-path.server.pcap"
    )
    page = _articles(report.to_html())
    got = {}
    for f in report.findings:
        got.update(_articles(f._repr_html_()))
    assert page and got == page


def test_many_findings_are_listed_as_the_page_lists_them(tmp_path: Path) -> None:
    """Past DETAILED_LADDERS cards have no ladder, past DETAILED findings are one table row:
    in the notebook as on the page (a capture can have thousands of findings)."""
    report = _analyze(_tiled(tmp_path, 8000))
    assert len(report.findings) > DETAILED
    page = report.to_html()
    shown = report._repr_html_()
    cards = _articles(shown)
    assert cards == _articles(page) and len(cards) == DETAILED
    assert "<svg" not in cards[f"finding-{DETAILED_LADDERS + 1}"]
    more = re.compile(r'<h3 id="more-findings">.*?</table>', re.S)
    [table] = more.findall(page)
    assert more.findall(shown) == [table]
    assert table.count("<tr class=") == len(report.findings) - DETAILED


@pytest.mark.parametrize("name", ["stale-keepalive.pcap", "refused.pcap", "clean.pcap"])
def test_report_shows_the_page_verdict(name: str) -> None:
    report = _analyze(LAB / name)
    [verdict] = VERDICT.findall(report.to_html())
    assert VERDICT.findall(report._repr_html_()) == [verdict]
    assert report._verdict_html() == verdict
    if name == "clean.pcap":
        assert "no problem found." in verdict
    else:
        top = report.findings[0]
        assert f'<span class="kind">{top.kind}</span>' in verdict


def test_notebook_style_is_the_page_style_scoped() -> None:
    report = _analyze(LAB / "stale-keepalive.pcap")
    page_rules = RULE.findall(_style(report.to_html()))
    assert page_rules
    for html in (report._repr_html_(), report.findings[0]._repr_html_()):
        assert html.startswith('<div class="tcpwhy"><style>') and html.endswith("</div>")
        assert html.count("<style") == 1  # the report styles all its cards once
        rules = RULE.findall(_style(html))
        # the same rules in the same order, each selector under the wrapper
        assert [body.strip() for _, body in rules] == [body.strip() for _, body in page_rules]
        for head, _ in rules:
            for sel in head.split(","):
                assert re.fullmatch(r"\.tcpwhy(\s+\S.*)?", sel.strip()), sel


def test_scope_css_keeps_every_rule_inside() -> None:
    got = scope_css(
        ":root { --a: 1; } /* note */ a:is(.x, .y), body { c: d; }"
        " @media (max-width: 600px) { .k, td { e: f; } }",
        ".w",
    )
    assert got.splitlines() == [
        ".w { --a: 1; }",
        ".w a:is(.x, .y), .w { c: d; }",
        "@media (max-width: 600px) { .w .k, .w td { e: f; } }",
    ]
    with pytest.raises(ValueError):  # keyframe names would stay global
        scope_css("@keyframes spin { from { x: 1; } }", ".w")


def test_capture_payloads_stay_text(tmp_path: Path) -> None:
    """The lab's stale keep-alive with script tags in the retried request (the HTML report's
    own hostile capture): the notebook shows them as text."""
    report = _analyze(_hostile(tmp_path))
    assert "GET /<script>q=1</script>" in report.to_json()  # a finding quotes the request
    shown = [report._repr_html_()] + [f._repr_html_() for f in report.findings]
    assert any("GET /&lt;script&gt;q=1&lt;/script&gt;" in h for h in shown[1:])
    for html in shown:
        for raw in ("<script", "<svg/onload", "<img", "<body", "<iframe"):
            assert raw not in html
        assert "onerror=q" not in html.replace("&lt;img src onerror=q=2&gt;", "")
