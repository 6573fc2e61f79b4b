"""Scenario registry and the run loop: build the lab, capture, play, check, tear down."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from tcpwhy.errors import ScenarioFailed
from tcpwhy.lab import ns as nsmod
from tcpwhy.lab.env import Event, Lab, Options, SockRow


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    explain: str
    play: Callable[[Lab], None]
    relay: bool = False
    finds: str | None = None
    """The finding kind its recording must produce (None: a baseline, nothing above info);
    the tests and docs/diagnose.md's catalogue read it from here."""
    shows: str = ""
    """What else the catalogue says of its finding(s), after the kind."""


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    summary: str,
    explain: str,
    relay: bool = False,
    *,
    finds: str | None,
    shows: str = "",
) -> Callable[[Callable[[Lab], None]], Callable[[Lab], None]]:
    """Register a scenario; ``finds`` (required) is the finding kind it demonstrates."""

    def deco(fn: Callable[[Lab], None]) -> Callable[[Lab], None]:
        SCENARIOS[name] = Scenario(
            name, summary, " ".join(explain.split()), fn, relay, finds, shows
        )
        return fn

    return deco


@dataclass
class LabResult:
    """What a run produced; `ok` is False with `reason` when the kernel did something else."""

    name: str
    ok: bool
    reason: str
    capture: str | None
    packets: int
    drops: int
    events: list[Event] = field(default_factory=list)
    states: list[tuple[str, SockRow]] = field(default_factory=list)
    story: str = ""
    trace: str | None = None  # the kernel's account (x.trace.jsonl) beside the capture
    trace_events: int = 0
    trace_lost: int = 0


def _load_scenarios() -> None:
    """Import every ``tcpwhy.lab.scenarios*`` module (a family per module): their decorators fill
    the registry, and a new family module needs no entry here."""
    import importlib
    import pkgutil

    import tcpwhy.lab

    for m in pkgutil.iter_modules(tcpwhy.lab.__path__):
        if m.name.startswith("scenarios"):
            importlib.import_module(f"tcpwhy.lab.{m.name}")


def get(name: str) -> Scenario:
    _load_scenarios()  # here, so that the registry is filled on first use
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(name) from None


def all_scenarios() -> list[Scenario]:
    _load_scenarios()
    return list(SCENARIOS.values())


def run_scenario(
    name: str,
    opts: Options | None = None,
    out: str | None = None,
    watch: Callable[[Lab], Callable[[], None]] | None = None,
) -> LabResult:
    """Play one scenario on the real kernel; the capture is written to `out` when given.
    `watch(lab)`, when given, is started once the namespaces exist and returns what stops
    it (`tcpwhy lab NAME --watch`: `tcpwhy watch` on the client's interface).

    Raises EnvironmentProblem without root/namespaces. A scenario that played
    out differently returns ok=False (the capture, if any, is kept for study).
    Everything the run created is removed before this returns, also on errors
    and KeyboardInterrupt.
    """
    sc = get(name)
    opts = opts or Options()
    nsmod.check_root()
    nsmod.remove_leftovers()
    if out:
        out = os.path.abspath(out)
    lab = Lab(opts, relay=sc.relay, capture_path=out)
    reason = ""
    ktrace = None
    stop_watch: Callable[[], None] | None = None
    try:
        if watch is not None:
            stop_watch = watch(lab)
        if out:
            from tcpwhy.lab.ktrace import KernelTrace, trace_path

            ktrace = KernelTrace([lab.client_ip, lab.server_ip], trace_path(out)).start()
        lab.say(
            "lab",
            f"scenario {name}: client {lab.client_ip}, server {lab.server_ip} port {opts.port}",
        )
        try:
            sc.play(lab)
        except ScenarioFailed as exc:
            reason = exc.reason
        lab.stop_capture()
        if ktrace is not None:
            ktrace.stop()
            if ktrace.lost and not reason:
                reason = f"the kernel trace lost {ktrace.lost} events: not evidence"
        if lab.relay is not None and lab.relay.error is not None and not reason:
            reason = f"relay rule failed: {lab.relay.error!r}"
        if lab.capture is not None and lab.capture.drops and not reason:
            reason = f"the capture lost {lab.capture.drops} packets in the kernel: not evidence"
    finally:
        if ktrace is not None:
            ktrace.stop()
        if stop_watch is not None:
            stop_watch()
        lab.close()
    cap = lab.capture
    return LabResult(
        name=name,
        ok=not reason,
        reason=reason,
        capture=out,
        packets=cap.written if cap else 0,
        drops=cap.drops if cap else 0,
        events=list(lab.story.events),
        states=list(lab.states),
        story=lab.story.render(),
        trace=ktrace.path if ktrace is not None else None,
        trace_events=len(ktrace.events) if ktrace is not None else 0,
        trace_lost=ktrace.lost if ktrace is not None else 0,
    )
