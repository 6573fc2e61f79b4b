"""Every JSON output tcpwhy prints, on the shipped lab recordings, against the published schemas.

The schemas are a contract for scripts: each test validates real output with the
`jsonschema` package, and one checks that the schemas are strict enough that a renamed
field fails.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tcpwhy.cli import main
from tcpwhy.schemas import NAMES, SCHEMA_VERSION, load
from tcpwhy.timestamps import rfc3339
from tests.schema_check import validate, validator

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"
CAPTURES = sorted(LAB.glob("*.pcap"))
DOCS = Path(__file__).resolve().parents[1] / "docs"


def run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    out, err = capfd.readouterr()
    assert "Traceback" not in err
    return status, out


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_schemas_are_valid_and_shipped() -> None:
    assert len(CAPTURES) >= 30  # every shipped lab recording (more are added with new rules)
    for name in NAMES:
        schema = load(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith(f"/{name}.schema.json")
        # docs/schemas/ holds the same file, and docs/json.md describes each one
        assert json.loads((DOCS / "schemas" / f"{name}.schema.json").read_text()) == schema
        assert f"`{name}.schema.json`" in (DOCS / "json.md").read_text(), name


def test_analyze_json_on_every_lab_recording(capfd: pytest.CaptureFixture[str]) -> None:
    kinds = set()
    for cap in CAPTURES:
        status, out = run(capfd, "analyze", str(cap), "--format", "json")
        doc = json.loads(out)
        validate("analyze", doc)
        kinds |= {f["kind"] for f in doc["findings"]}
        assert status == (1 if any(f["severity"] != "info" for f in doc["findings"]) else 0)
    assert len(kinds) >= 20  # the recordings cover the rules, so the schema saw their facts
    pair = [
        str(LAB / "middlebox-idle-reset-path.pcap"),
        str(LAB / "middlebox-idle-reset-path.server.pcap"),
    ]
    _, out = run(capfd, "analyze", *pair, "--format", "json")
    doc = json.loads(out)
    validate("analyze", doc)
    assert doc["paths"]


def test_conns_and_packets_jsonl_on_every_lab_recording(
    capfd: pytest.CaptureFixture[str],
) -> None:
    counts = {"conns": 0, "packets": 0}
    for cap in CAPTURES:
        for view in counts:
            status, out = run(capfd, view, str(cap), "--format", "jsonl")
            assert status == 0
            for record in lines(out):
                validate(view, record)
                counts[view] += 1
            if view == "packets":  # ts_ns is exactly the time stamp `ts` writes
                for line in out.splitlines():
                    rec = json.loads(line, parse_float=Decimal)
                    assert rec["ts_ns"] == int(rec["ts"] * 10**9)
                    assert rec["utc_time"] == rfc3339(rec["ts_ns"])
    assert counts["conns"] > 200 and counts["packets"] > 1000
    _, out = run(
        capfd, "conns", str(LAB / "clean.pcap"), "--format", "jsonl", "--local-nets", "10.0.0.0/8"
    )
    for record in lines(out):
        validate("conns", record)
        assert "local_orig" in record


def test_flow_json_on_every_lab_recording(capfd: pytest.CaptureFixture[str]) -> None:
    """`flow --format json` of up to four connections of every shipped recording (ICMP
    errors, folds, refused and unanswered connections among them)."""
    kinds: set[str] = set()
    n = 0
    for cap in CAPTURES:
        _, out = run(capfd, "conns", str(cap), "--format", "jsonl")
        for stream in sorted({r["stream"] for r in lines(out)})[:4]:
            status, out = run(capfd, "flow", str(cap), str(stream), "--format", "json")
            assert status == 0, (cap.name, stream)
            doc = json.loads(out)
            validate("flow", doc)
            kinds |= {r["kind"] for r in doc["rows"]}
            n += 1
    assert n > 60 and {"packet", "fold"} <= kinds, kinds


@pytest.mark.corpus
def test_analyze_and_conns_json_on_the_zeek_corpus(
    zeek_corpus: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Captures tcpwhy did not make (Zeek's test traces: tunnels, odd link types, traces
    cut anywhere): every analyze document and conns record fits the schemas too."""
    docs = records = 0
    for cap in sorted(p for p in zeek_corpus.iterdir() if p.is_file()):
        status, out = run(capfd, "analyze", str(cap), "--format", "json")
        if status == 2:
            continue  # not a capture tcpwhy reads (one line on stderr, tested elsewhere)
        validate("analyze", json.loads(out))
        docs += 1
        status, out = run(capfd, "conns", str(cap), "--format", "jsonl")
        assert status == 0, cap.name
        for record in lines(out):
            validate("conns", record)
            records += 1
    assert docs >= 30 and records >= 50, (docs, records)


def test_explain_json(capfd: pytest.CaptureFixture[str]) -> None:
    status, out = run(capfd, "explain", "Connection reset by peer", "--format", "json")
    assert status == 0
    doc = json.loads(out)
    validate("explain", doc)
    assert doc["meanings"]
    status, out = run(capfd, "explain", "no such message anywhere", "--format", "json")
    assert status == 1  # nothing matches: documented as 1
    validate("explain", json.loads(out))


def test_fleet_json_with_an_unreadable_file(tmp_path: Path) -> None:
    d = tmp_path / "fleet"
    (d / "host-a").mkdir(parents=True)
    shutil.copy(LAB / "abortive-close.pcap", d / "host-a" / "a-1.pcap")
    (d / "host-a" / "a-2.pcap").write_bytes(b"this is not a capture")
    for name in ("stale-keepalive.pcap", "refused.pcap"):
        shutil.copy(LAB / name, d / name)
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", str(d), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr  # a file could not be read: 2, the rest reported
    doc = json.loads(r.stdout)
    validate("fleet", doc)
    assert [e["file"] for e in doc["errors"]] == [str(d / "host-a" / "a-2.pcap")]
    assert doc["findings"]


def test_watch_jsonl_replaying_lab_recordings(capfd: pytest.CaptureFixture[str]) -> None:
    n = 0
    for name in ("refused.pcap", "stale-keepalive.pcap", "syn-flood.pcap", "zero-window.pcap"):
        status, out = run(capfd, "watch", "-r", str(LAB / name), "--format", "jsonl")
        assert status in (0, 1)
        for record in lines(out):
            validate("watch", record)
            assert record["ts"] == rfc3339(record["ts_ns"])
            g = record["group"]
            assert (
                g["first_ts"] == rfc3339(g["first_ts_ns"]) and g["first_ts_ns"] <= g["last_ts_ns"]
            )
            n += 1
    assert n >= 3


def test_host_watch_json_in_a_namespace(netns_ok: None) -> None:
    from tcpwhy.lab import ns as nsmod

    name = nsmod.new_name("schema")
    try:
        nsmod.create_namespace(name)
        r = subprocess.run(
            [sys.executable, "-m", "tcpwhy", "host", "watch", "--netns", name, "--count", "2",
             "--interval", "0.2", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        samples = lines(r.stdout)
        assert [s["sample"] for s in samples] == [1, 2]
        for s in samples:
            validate("host-watch", s)
        assert samples[1]["ts_ns"] > samples[0]["ts_ns"]
        for view, *more in (
            ("states",),
            ("states", "--by", "port", "--list"),
            ("states", "--by", "remote"),
            ("states", "--by", "process"),
            ("listen",),
            ("sysctl",),
            ("counters", "--all"),
            ("counters", "--interval", "0.2", "--count", "1"),
            ("watch", "--once"),
        ):
            r = subprocess.run(
                [sys.executable, "-m", "tcpwhy", "host", view, *more, "--netns", name,
                 "--format", "json"],
                capture_output=True,
                text=True,
                timeout=60,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            for doc in (
                [json.loads(r.stdout)]
                if view in ("states", "listen", "sysctl")
                else lines(r.stdout)
            ):
                validate(f"host-{view}", doc)
    finally:
        nsmod.delete_namespace(name)


def test_a_renamed_or_missing_field_fails(capfd: pytest.CaptureFixture[str]) -> None:
    _, out = run(capfd, "analyze", str(LAB / "close-wait-leak.pcap"), "--format", "json")
    doc = json.loads(out)
    _, out = run(capfd, "conns", str(LAB / "refused.pcap"), "--format", "jsonl")
    conn = lines(out)[0]
    _, out = run(capfd, "packets", str(LAB / "refused.pcap"), "--format", "jsonl")
    pkt = lines(out)[0]
    cases: list[tuple[str, dict[str, Any], list[str]]] = [
        ("analyze", doc, ["connections"]),
        ("analyze", doc, ["capture", "duration_s"]),
        ("analyze", doc, ["findings", 0, "fixes"]),
        ("analyze", doc, ["findings", 0, "timeline", 0, "client_state"]),
        ("conns", conn, ["end"]),
        ("packets", pkt, ["flags"]),
    ]
    for name, original, path in cases:
        renamed = copy.deepcopy(original)
        parent = renamed
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1] + "_renamed"] = parent.pop(path[-1])
        assert not validator(name).is_valid(renamed), (name, path)
    wrong = copy.deepcopy(doc)
    wrong["schema_version"] = "0.9"
    assert not validator("analyze").is_valid(wrong)
    assert doc["schema_version"] == SCHEMA_VERSION


def test_ending_codes_beside_the_words(capfd: pytest.CaptureFixture[str]) -> None:
    """conns' end_code and analyze's endings carry a code for every connection, agreeing
    with the words they stand beside."""
    from tcpwhy.tcp.connections import ENDINGS

    seen: set[str] = set()
    for cap in CAPTURES:
        _, out = run(capfd, "conns", str(cap), "--format", "jsonl")
        resets: dict[str, int] = {}
        for r in lines(out):
            if r["end_code"].startswith("reset"):
                resets[r["end_code"]] = resets.get(r["end_code"], 0) + 1
            code, words = r["end_code"], r["end"]
            assert code in ENDINGS and code != "other", words
            seen.add(code)
            if code.startswith("reset_by_"):
                assert words.startswith("reset by " + code.removeprefix("reset_by_")), words
            if code == "fin_both":
                assert words.startswith("closed by ") and words.count("FIN") == 2, words
        _, out = run(capfd, "analyze", str(cap), "--format", "json")
        doc = json.loads(out)
        assert {e["words"]: e["count"] for e in doc["endings"]} == doc["connections"]
        assert sum(e["count"] for e in doc["endings"]) <= doc["capture"]["connections"]
        seen |= {e["code"] for e in doc["endings"]}
        # analyze names the resetter as conns does (the side whose RST came first)
        got = {e["code"]: e["count"] for e in doc["endings"] if e["code"].startswith("reset")}
        assert got == resets, cap.name
    # the recordings end connections every way the codes name but the builder's own limits
    assert {"fin_both", "half_closed", "refused", "no_answer", "open_at_end"} <= seen
    assert {"reset_by_originator", "reset_by_responder", "rejected_by_icmp"} <= seen
    assert "reset" not in seen  # analyze says who reset, as conns does


def test_fixes_by_stack(capfd: pytest.CaptureFixture[str]) -> None:
    """Each finding's fixes as {stack, knob, value, text}: the sentences stay as the text
    report prints them, the stack-specific parts carry the measured value."""
    import pickle

    from tcpwhy.diagnose.knowledge import STACKS, Advice, advice, fixes_of, sysctl

    _, out = run(capfd, "analyze", str(LAB / "stale-keepalive.pcap"), "--format", "json")
    (f,) = [f for f in json.loads(out)["findings"] if f["kind"] == "stale-keepalive-reuse"]
    by = {(x["stack"], x["knob"]): x for x in f["fixes_by_stack"]}
    assert {x["stack"] for x in f["fixes_by_stack"]} <= set(STACKS)
    go = by[("go", "http.Transport.IdleConnTimeout")]
    assert go["text"] in f["fixes"][0]  # the part is the sentence's own words
    # the value to set is the one the sentence recommends ("at most 0.8 s")
    assert go["value"] and f"at most {go['value'][:-1]} s" in f["fixes"][0]
    assert by[("nginx", "keepalive_timeout")]["value"] is None  # server side: no number
    _, text = run(capfd, "analyze", str(LAB / "stale-keepalive.pcap"))
    for sentence in f["fixes"]:
        assert f"- {sentence[:60]}" in text
    # a sentence that names no stack is one "any" object, its words; one that does, its parts
    _, out = run(capfd, "analyze", str(LAB / "close-wait-leak.pcap"), "--format", "json")
    (g,) = [g for g in json.loads(out)["findings"] if g["kind"] == "close-wait-leak"]
    prose = [x for x in g["fixes_by_stack"] if x["text"] in g["fixes"]]
    assert prose and {x["stack"] for x in prose} == {"any"}
    assert "Pools: evict connections the server closed." in [x["text"] for x in g["fixes_by_stack"]]
    assert {x["stack"] for x in g["fixes_by_stack"]} > {"any", "java-apache-httpclient"}
    a = advice("Set it.", sysctl("net.ipv4.tcp_tw_reuse", "1", "on clients"))
    for copy_of in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a)):
        assert isinstance(copy_of, Advice) and copy_of == "Set it."
        assert fixes_of(copy_of) == a.fixes
    with pytest.raises(ValueError):
        advice("x", sysctl("a", None, "b").__class__("cobol", None, None, "no such stack"))


# a setting a stack names in a fix sentence: a sysctl, an nginx directive, a TLS library's or
# an HTTP client's configuration field
KNOB_WORDS = re.compile(
    r"\bnet\.(?:ipv4|ipv6|core)\.\w+|\b(?:proxy|ssl|keepalive)_\w+|tls\.Config|SSLContext"
    r"|jdk\.tls\.|http\.Transport|http\.Agent|\bIdleConnTimeout|\bmax_retries"
    r"|maxseg size|\bSSL_OP_\w+"
)


def test_fixes_with_a_knob_name_a_stack(capfd: pytest.CaptureFixture[str]) -> None:
    """A fix sentence that names a setting gives it as a stack's {stack, knob} object, not
    only as "any" prose; on the lab recordings most fix objects name a stack."""
    from tcpwhy.diagnose.engine import diagnose_files
    from tcpwhy.diagnose.knowledge import STACKS, fixes_of

    total = neutral = 0
    checked: set[str] = set()
    for cap in CAPTURES:
        for f in diagnose_files([str(cap)]).findings:
            for sentence in f.fixes:
                parts = fixes_of(sentence)
                assert {x.stack for x in parts} <= set(STACKS)
                total += len(parts)
                neutral += sum(x.stack == "any" for x in parts)
                if KNOB_WORDS.search(sentence):
                    assert any(x.stack != "any" and x.knob for x in parts), (f.kind, sentence)
                    checked.add(f.kind)
        _, out = run(capfd, "analyze", str(cap), "--format", "json")
        # the JSON carries the same objects
        n = sum(len(f["fixes_by_stack"]) for f in json.loads(out)["findings"])
        assert n == sum(
            len(fixes_of(x)) for f in diagnose_files([str(cap)]).findings for x in f.fixes
        )
    assert {"tls-fatal-alert", "tls-truncation", "pmtu-discovery", "pmtu-black-hole"} <= checked
    assert neutral < total / 2, (neutral, total)


def test_lab_json_and_its_kernel_trace(netns_ok: None, tmp_path: Path) -> None:
    """`lab NAME --format json` and the kernel trace beside its recording (the lines of
    `host trace --format jsonl`), validated; the kinds are what analyze finds there."""
    out = tmp_path / "refused.pcap"
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "lab", "refused", "-w", str(out), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    validate("lab", doc)
    assert doc["outcome"] == "as_designed" and doc["reason"] is None
    assert doc["recordings"][0] == str(out)
    a = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", str(out), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert doc["finding_kinds"] == sorted({f["kind"] for f in json.loads(a.stdout)["findings"]})
    assert "connection-refused" in doc["finding_kinds"]
    trace = doc["kernel_trace"]
    assert trace is not None and trace["path"] in doc["recordings"]
    events = lines(Path(trace["path"]).read_text())
    assert len(events) == trace["events"] > 0
    for ev in events:
        validate("host-trace", ev)
        assert ev["ts"] == rfc3339(ev["ts_ns"]) and "time" not in ev
    assert any(ev["event"] == "reset_sent" for ev in events)


def test_lab_write_into_a_missing_directory(tmp_path: Path) -> None:
    """A -w path whose directory does not exist: one line and exit 2, before anything runs
    (no root needed to see it)."""
    bad = tmp_path / "no-such-dir" / "x.pcap"
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "lab", "refused", "-w", str(bad), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"tcpwhy: {bad}: no such directory: {bad.parent}"]
    assert r.stdout == ""


def test_host_trace_jsonl_lines_from_the_columns() -> None:
    """The compiled-path writer (`Batch.jsonl`) and `TraceEvent.as_json` both fit the schema,
    with the decoder's nanoseconds when it has them."""
    from tcpwhy.host import trace as tr

    b = tr.Batch(
        ts=[1795308254.000001, 1795308255.5],
        ts_ns=[1795308254000001234, 1795308255500000000],
        event=["state", "drop"],
        src=["10.0.0.1", None],
        sport=[80, None],
        dst=["10.0.0.2", None],
        dport=[5555, None],
        old_state=["SYN_SENT", None],
        new_state=["ESTABLISHED", None],
        state=["ESTABLISHED", None],
        reason=[None, "TCP_LISTEN_OVERFLOW"],
        pid=[7, 0],
        comm=["curl", None],
        context=["task", "softirq"],
        explanation=[None, "x"],
    )
    got = lines(b.jsonl())
    assert got == [e.as_json() for e in b.events()]
    for ev in got:
        validate("host-trace", ev)
    assert got[0]["ts_ns"] == 1795308254000001234
    assert got[0]["ts"] == "2026-11-22T00:44:14.000001234Z"


def test_explain_json_fixes_are_the_analyze_objects(capfd: pytest.CaptureFixture[str]) -> None:
    """explain's per-stack fixes are the objects analyze gives (one source, knowledge.py)."""
    status, out = run(capfd, "explain", "bind: address already in use", "--format", "json")
    assert status == 0
    doc = json.loads(out)
    validate("explain", doc)
    (m,) = doc["meanings"]
    by = {x["stack"]: x for x in m["fixes"]}
    assert by["python"]["knob"] == "allow_reuse_address" and by["java"]["value"] == "true"
    _, out = run(capfd, "explain", "RemoteDisconnected", "--format", "json")
    eof = json.loads(out)["meanings"][0]["fixes"]
    _, out = run(capfd, "analyze", str(LAB / "keepalive-race.pcap"), "--format", "json")
    (race,) = [f for f in json.loads(out)["findings"] if f["kind"] == "keepalive-race"]
    go = [x for x in race["fixes_by_stack"] if x["knob"] == "http.Transport.IdleConnTimeout"]
    assert go and {**go[0], "value": None} in eof  # the same object, without the measured value


def _fields(node: Any, path: str = "") -> list[tuple[str, str, dict[str, Any]]]:
    """Every property a schema declares, as (path, name, its schema), `#def/` for $defs."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    if not isinstance(node, dict):
        return out
    for k, v in node.get("properties", {}).items():
        out += [(path + k, k, v), *_fields(v, path + k + "/")]
    for key, step in (("items", "[]/"), ("additionalProperties", "*/")):
        out += _fields(node.get(key), path + step)
    for k, v in node.get("$defs", {}).items():
        out += _fields(v, f"#{k}/")
    for key in ("oneOf", "anyOf", "allOf"):
        for v in node.get(key, []):
            out += _fields(v, path)
    return out


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("type", [])
    got = {t} if isinstance(t, str) else set(t)
    for key in ("oneOf", "anyOf"):
        for v in node.get(key, []):
            got |= _types(v)
    return got


# Times and durations that predate the convention (RFC 3339 `ts`/`*_time` beside `*_ns`,
# durations with their unit in the name) and stay in 1.x: each is listed in docs/json.md
# ("Time"). Fixing one removes it here; a new field that breaks the convention fails.
LEGACY_TIMES = {
    # conns keeps Zeek's conn.log names (a script written for Zeek reads tcpwhy's records);
    # `start_ns` and `start_time` beside them give the start by the convention
    ("conns", "start"),
    ("conns", "duration"),
    ("conns", "irtt"),
    # packets: tshark's frame.time_relative and frame.time_epoch; `ts_ns`, `utc_time` beside
    ("packets", "time"),
    ("packets", "ts"),
}
TIME_NAMES = ("ts", "time", "start", "duration", "irtt", "seen_full")


def test_times_and_durations_follow_the_convention() -> None:
    """Every schema field that holds a time is an RFC 3339 string (`ts`, `time`, `*_time`)
    or integer epoch nanoseconds (`*_ns`), every duration names its unit (`*_s`, `*_ms`),
    except the documented fields kept from before the convention."""
    off: set[tuple[str, str]] = set()
    for name in NAMES:
        for path, field, node in _fields(load(name)):
            if field.endswith("_per_s") or (name, path) == ("flow", "#endpoint/start"):
                continue  # a rate; a state name
            if not (field in TIME_NAMES or field.endswith(("_ts", "_time", "_ns", "_s", "_ms"))):
                continue
            ty = _types(node)
            ok = (
                (field.endswith("_ns") and "integer" in ty and ty <= {"integer", "null"})
                or (field.endswith(("_s", "_ms")) and bool(ty & {"number", "integer", "object"}))
                or (
                    (field in ("ts", "time", "seen_full") or field.endswith(("_time", "_ts")))
                    and node.get("format") == "date-time"
                )
            )
            if not ok:
                off.add((name, path))
    assert off == LEGACY_TIMES
    text = (DOCS / "json.md").read_text()
    section = text[text.index("\n## Time\n") :]
    bullets = section[: section.index("\n## ", 1)].split("\n* ")[1:]
    for name, path in sorted(LEGACY_TIMES):
        view = f"`{name.replace('-', ' ')}`"  # host-watch: `host watch`
        (bullet,) = [b for b in bullets if b.startswith(view)]
        assert path.rsplit("/", 1)[-1] in bullet, (name, path)


def test_every_json_output_has_a_schema_the_suite_checks() -> None:
    """The session-wide check (tests/json_contract.py) knows a schema for every command and
    --format that prints JSON, and every schema is reached from a command."""
    from tcpwhy.cli import build_parser
    from tests.json_contract import SCHEMA_OF, schema_of

    json_outputs = set()
    for action in build_parser([])._subparsers._group_actions:  # type: ignore[union-attr]
        for cmd, sub in action.choices.items():  # type: ignore[union-attr]
            subs = [(cmd, sub)]
            if sub._subparsers is not None:  # host: its views
                subs = [
                    (f"{cmd} {view}", p)
                    for a in sub._subparsers._group_actions
                    for view, p in (a.choices or {}).items()
                ]
            for name, p in subs:
                for a in p._actions:
                    if "--format" in a.option_strings:
                        json_outputs |= {(name, f) for f in a.choices or () if "json" in f}
    json_outputs.discard(("conns", "zeek-json"))  # Zeek's own JSON logs (Zeek's schema)
    assert json_outputs == set(SCHEMA_OF)
    assert set(SCHEMA_OF.values()) | {"fleet"} == set(NAMES)
    assert schema_of(["host", "--netns", "x", "watch", "--format", "json"]) == "host-watch"
    assert schema_of(["analyze", "x.pcap", "--format", "text"]) is None


def test_the_suite_check_fails_a_wrong_document(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document off its schema fails the test that made it, run in process, as a program
    or through the API; what the command prints reaches the test unchanged."""
    from tests import json_contract

    cap = str(LAB / "refused.pcap")
    before = dict(json_contract.checked)
    _, out = run(capfd, "packets", cap, "--format", "jsonl")
    assert json_contract.checked["packets"] == before.get("packets", 0) + len(lines(out)) > 0
    program = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", cap, "--format", "jsonl"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert program.stdout == out  # passed on byte for byte
    assert json_contract.checked["packets"] == before.get("packets", 0) + 2 * len(lines(out))
    _, out = run(capfd, "conns", cap, "--format", "jsonl")
    # a field renamed in one record: the check of what `tcpwhy conns` printed fails
    bad = out.replace('"end_code"', '"ending_code"', 1)
    with pytest.raises(AssertionError, match=r"tcpwhy conns .*ending_code"):
        json_contract.check_run(["conns", cap, "--format", "jsonl"], bad, 0)
    # in process: tcpwhy writing another schema version fails the run itself
    monkeypatch.setattr("tcpwhy.schemas.SCHEMA_VERSION", "9.9")
    with pytest.raises(AssertionError, match=r"tcpwhy analyze .*schema_version"):
        main(["analyze", cap, "--format", "json"])
    capfd.readouterr()
    import tcpwhy

    with pytest.raises(AssertionError, match="schema_version"):
        tcpwhy.analyze(cap).to_json()
