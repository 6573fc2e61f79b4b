"""The TCP state machine on constructed connections, on real traces, and its generated docs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.decode.table import ACK, FIN, PSH, RST, SYN
from tcpwhy.tcp.state import (
    DOC_BEGIN,
    DOC_END,
    ICMP_ERROR_ROW,
    NO_FRAME,
    STAYS,
    TIME_WAIT_NS,
    TRANSITIONS,
    ConnectionStates,
    Endpoint,
    Event,
    State,
    derive_events,
    diagram,
    docs_block,
    run_connection,
    run_rows,
)

REPO = Path(__file__).resolve().parents[1]
C, R = 0, 1  # originator (client), responder (server)
MS = 1_000_000
SEC = 1_000_000_000
U32 = 0xFFFFFFFF


class Cap:
    """A connection as a capture would show it: one row per segment, in capture order.

    Sequence numbers follow what each side has sent unless given; the ACK
    field defaults to everything the other side has sent so far.
    """

    def __init__(self, isn: tuple[int, int] = (1000, 50000), t0: int = 1_700_000_000 * SEC) -> None:
        self.nxt = list(isn)
        self.t = t0
        self.rows: list[tuple[int, int, int, int, int, int, int]] = []

    def seg(
        self,
        d: int,
        flags: int,
        data: int = 0,
        *,
        dt: int = MS,
        seq: int | None = None,
        ack: int | None = None,
    ) -> int:
        """Append a segment; returns its frame number."""
        self.t += dt
        if seq is None:
            seq = self.nxt[d]
            self.nxt[d] = (seq + data + (1 if flags & (SYN | FIN) else 0)) & U32
        if ack is None:
            ack = self.nxt[1 - d] if flags & ACK else 0
        frame = len(self.rows) + 1
        self.rows.append((d, flags, seq, ack & U32, data, self.t, frame))
        return frame

    def handshake(self) -> None:
        self.seg(C, SYN)
        self.seg(R, SYN | ACK)
        self.seg(C, ACK)

    def columns(self) -> list[np.ndarray]:
        cols = list(zip(*self.rows, strict=True))
        dtypes = (np.uint8, np.uint16, np.uint32, np.uint32, np.uint32, np.int64, np.uint64)
        return [np.array(c, dtype=dt) for c, dt in zip(cols, dtypes, strict=True)]

    def run(self, end_ns: int | None = None) -> ConnectionStates:
        return run_connection(*self.columns(), end_ns=end_ns)

    def ts(self, frame: int) -> int:
        return self.rows[frame - 1][5]


def path(e: Endpoint) -> list[State]:
    return [s.state for s in e.timeline]


def steps(e: Endpoint) -> list[tuple[State, int]]:
    """(state, frame) of every timeline entry after the starting one."""
    return [(s.state, s.frame) for s in e.timeline[1:]]


def clean(res: ConnectionStates) -> None:
    assert res.originator.unexpected == []
    assert res.responder.unexpected == []


# ---------------------------------------------------------------------------------------
# opening
# ---------------------------------------------------------------------------------------


def test_three_way_handshake() -> None:
    cap = Cap()
    cap.handshake()
    res = cap.run()
    clean(res)
    o, r = res.originator, res.responder
    assert not o.assumed and not r.assumed
    assert o.timeline[0].state is State.CLOSED and o.timeline[0].event is None
    assert r.timeline[0].state is State.LISTEN
    assert steps(o) == [(State.SYN_SENT, 1), (State.ESTABLISHED, 2)]
    assert steps(r) == [(State.SYN_RECEIVED, 1), (State.ESTABLISHED, 3)]
    assert o.timeline[2].ts_ns == cap.ts(2)
    assert o.timeline[2].event is Event.RECV_SYNACK
    assert r.timeline[2].event is Event.RECV_ACK_OF_SYN


def test_syn_answered_by_rst() -> None:
    cap = Cap()
    cap.seg(C, SYN)
    cap.seg(C, SYN, seq=1000, dt=SEC)  # retransmitted
    cap.seg(R, RST | ACK, seq=0, ack=1001)
    res = cap.run()
    clean(res)
    assert steps(res.originator) == [(State.SYN_SENT, 1), (State.CLOSED, 3)]
    assert res.originator.timeline[-1].event is Event.RECV_RST
    # nobody listening: the responder never held a connection
    assert path(res.responder) == [State.CLOSED]


def test_syn_ack_lost_after_the_capture_point() -> None:
    # capture near the server: the client keeps resending its SYN, so it never got the SYN-ACK
    cap = Cap()
    cap.seg(C, SYN)
    cap.seg(R, SYN | ACK)
    cap.seg(C, SYN, seq=1000, dt=SEC)
    cap.seg(R, SYN | ACK, seq=50000)
    cap.seg(C, ACK)
    res = cap.run()
    clean(res)
    assert steps(res.originator) == [(State.SYN_SENT, 1), (State.ESTABLISHED, 4)]
    assert steps(res.responder) == [(State.SYN_RECEIVED, 1), (State.ESTABLISHED, 5)]


def test_syn_ack_missing_from_a_one_way_capture() -> None:
    # only client -> server is captured (asymmetric routing)
    cap = Cap()
    cap.seg(C, SYN)
    cap.seg(C, ACK, ack=50001)
    cap.seg(C, ACK | PSH, 10, ack=50001)
    cap.seg(C, FIN | ACK, ack=50001)
    res = cap.run()
    clean(res)
    assert path(res.originator) == [
        State.CLOSED,
        State.SYN_SENT,
        State.ESTABLISHED,
        State.FIN_WAIT_1,
    ]
    assert steps(res.responder) == [
        (State.SYN_RECEIVED, 1),
        (State.ESTABLISHED, 2),
        (State.CLOSE_WAIT, 4),
    ]


# ---------------------------------------------------------------------------------------
# closing
# ---------------------------------------------------------------------------------------


def four_way_close() -> tuple[Cap, dict[str, int]]:
    cap = Cap()
    cap.handshake()
    cap.seg(C, ACK | PSH, 100)
    cap.seg(R, ACK | PSH, 300)
    f = {"cfin": cap.seg(C, FIN | ACK)}
    f["sack"] = cap.seg(R, ACK)
    f["sfin"] = cap.seg(R, FIN | ACK, dt=5 * MS)
    f["cack"] = cap.seg(C, ACK)
    return cap, f


def test_four_way_close_client_active_closer() -> None:
    cap, f = four_way_close()
    tw_end = cap.ts(f["sfin"]) + TIME_WAIT_NS
    res = cap.run(end_ns=tw_end + 5 * SEC)
    clean(res)
    o, r = res.originator, res.responder
    assert steps(o)[2:] == [
        (State.FIN_WAIT_1, f["cfin"]),
        (State.FIN_WAIT_2, f["sack"]),
        (State.TIME_WAIT, f["sfin"]),
        (State.CLOSED, NO_FRAME),
    ]
    last = o.timeline[-1]
    assert last.event is Event.TIMEOUT_2MSL and last.ts_ns == tw_end
    assert steps(r)[2:] == [
        (State.CLOSE_WAIT, f["cfin"]),
        (State.LAST_ACK, f["sfin"]),
        (State.CLOSED, f["cack"]),
    ]


def test_time_wait_lasts_60_seconds_of_capture_time() -> None:
    cap, f = four_way_close()
    entered = cap.ts(f["sfin"])
    assert cap.run().originator.state is State.TIME_WAIT  # time stops at the last packet
    assert cap.run(end_ns=entered + TIME_WAIT_NS - 1).originator.state is State.TIME_WAIT
    assert cap.run(end_ns=entered + TIME_WAIT_NS).originator.state is State.CLOSED


def test_time_wait_expires_before_a_late_packet() -> None:
    cap, f = four_way_close()
    late = cap.seg(R, FIN | ACK, seq=cap.nxt[R] - 1, dt=61 * SEC)
    res = cap.run()
    o = res.originator
    assert o.timeline[-1].state is State.CLOSED
    assert o.timeline[-1].ts_ns == cap.ts(f["sfin"]) + TIME_WAIT_NS
    # the FIN resent after the socket is gone is a misfit, not a restart
    assert [(u.state, u.event, u.frame) for u in o.unexpected] == [
        (State.CLOSED, Event.RECV_FIN, late)
    ]


def test_simultaneous_close_passes_through_closing() -> None:
    cap = Cap()
    cap.handshake()
    cfin = cap.seg(C, FIN | ACK)
    # the server's FIN does not acknowledge the client's: it was sent before that arrived
    sfin = cap.seg(R, FIN | ACK, ack=1001, dt=10_000)
    cack = cap.seg(C, ACK)
    sack = cap.seg(R, ACK)
    res = cap.run()
    clean(res)
    assert steps(res.originator)[2:] == [
        (State.FIN_WAIT_1, cfin),
        (State.CLOSING, sfin),
        (State.TIME_WAIT, sack),
    ]
    assert steps(res.responder)[2:] == [
        (State.FIN_WAIT_1, sfin),
        (State.CLOSING, sfin),
        (State.TIME_WAIT, cack),
    ]


def test_fin_lost_after_the_capture_point_is_not_delivered() -> None:
    # the server keeps sending without ever acknowledging the client's FIN: it never got it
    cap = Cap()
    cap.handshake()
    cfin = cap.seg(C, FIN | PSH | ACK, 31)
    cap.seg(R, ACK, ack=cap.nxt[C] - 1)  # acks the data only
    sfin = cap.seg(R, FIN | PSH | ACK, 31, ack=cap.nxt[C] - 1, dt=200 * SEC)
    fin_seq = cap.rows[sfin - 1][2]
    for _ in range(3):
        cap.seg(R, FIN | PSH | ACK, 31, seq=fin_seq, ack=cap.nxt[C] - 1, dt=SEC)
    res = cap.run()
    clean(res)
    assert steps(res.responder)[2:] == [(State.FIN_WAIT_1, sfin)]
    assert steps(res.originator)[2:] == [(State.FIN_WAIT_1, cfin), (State.CLOSING, sfin)]


def test_fin_that_acks_the_peers_fin() -> None:
    cap = Cap()
    cap.handshake()
    cfin = cap.seg(C, FIN | ACK)
    sfin = cap.seg(R, FIN | ACK)  # acknowledges the client's FIN and closes in one segment
    cack = cap.seg(C, ACK)
    res = cap.run()
    clean(res)
    o, r = res.originator, res.responder
    assert steps(o)[2:] == [
        (State.FIN_WAIT_1, cfin),
        (State.FIN_WAIT_2, sfin),
        (State.TIME_WAIT, sfin),
    ]
    assert [s.event for s in o.timeline[-2:]] == [Event.RECV_ACK_OF_FIN, Event.RECV_FIN]
    assert steps(r)[2:] == [
        (State.CLOSE_WAIT, cfin),
        (State.LAST_ACK, sfin),
        (State.CLOSED, cack),
    ]


def test_fin_piggybacked_on_data() -> None:
    cap = Cap()
    cap.handshake()
    cap.seg(C, ACK | PSH, 50)
    sfin = cap.seg(R, FIN | PSH | ACK, 1000)  # last response bytes and the FIN together
    data_seq = cap.rows[sfin - 1][2]
    part = cap.seg(C, ACK, ack=data_seq + 1000)  # covers the data, not the FIN
    full = cap.seg(C, ACK, ack=data_seq + 1001)
    res = cap.run()
    clean(res)
    assert steps(res.responder)[2:] == [(State.FIN_WAIT_1, sfin), (State.FIN_WAIT_2, full)]
    # an ACK that stops short of the FIN was sent before the FIN arrived
    assert steps(res.originator)[2:] == [(State.CLOSE_WAIT, part)]
    assert part < full


def test_fin_piggybacked_on_data_acked_at_once() -> None:
    cap = Cap()
    cap.handshake()
    cap.seg(C, ACK | PSH, 50)
    sfin = cap.seg(R, FIN | PSH | ACK, 1000)
    cack = cap.seg(C, ACK)
    cfin = cap.seg(C, FIN | PSH | ACK, 20)  # the client's last data with its FIN
    sack = cap.seg(R, ACK)
    res = cap.run()
    clean(res)
    assert steps(res.originator)[2:] == [
        (State.CLOSE_WAIT, sfin),
        (State.LAST_ACK, cfin),
        (State.CLOSED, sack),
    ]
    assert steps(res.responder)[2:] == [
        (State.FIN_WAIT_1, sfin),
        (State.FIN_WAIT_2, cack),
        (State.TIME_WAIT, cfin),
    ]


def test_fin_ack_across_sequence_wraparound() -> None:
    cap = Cap(isn=(U32 - 5, 7))
    cap.handshake()
    cap.seg(C, ACK | PSH, 4)  # the client's sequence numbers wrap past 2**32 here
    cfin = cap.seg(C, FIN | ACK)
    assert cap.rows[cfin - 1][2] == 0xFFFFFFFF
    not_yet = cap.seg(R, ACK, ack=0xFFFFFFFF)  # acks the data, not the FIN
    acked = cap.seg(R, ACK, ack=0)  # FIN at 0xFFFFFFFF, so fin_seq + 1 wraps to 0
    res = cap.run()
    clean(res)
    assert steps(res.originator)[-2:] == [(State.FIN_WAIT_1, cfin), (State.FIN_WAIT_2, acked)]
    assert not_yet < acked


def test_ack_number_without_ack_flag_acknowledges_nothing() -> None:
    cap = Cap()
    cap.handshake()
    cap.seg(C, FIN | ACK)
    cap.seg(R, PSH, ack=cap.nxt[C])  # the field is set but the flag is not
    res = cap.run()
    assert res.originator.state is State.FIN_WAIT_1


def test_half_close_data_still_flows_the_other_way() -> None:
    cap = Cap()
    cap.handshake()
    cap.seg(C, ACK | PSH, 20)
    cfin = cap.seg(C, FIN | ACK)
    sack = cap.seg(R, ACK)
    for _ in range(5):  # the server keeps sending after the client's FIN
        cap.seg(R, ACK | PSH, 1448)
        cap.seg(C, ACK)
    sfin = cap.seg(R, FIN | ACK)
    cap.seg(C, ACK)
    res = cap.run()
    clean(res)
    o, r = res.originator, res.responder
    assert steps(o)[2:] == [
        (State.FIN_WAIT_1, cfin),
        (State.FIN_WAIT_2, sack),
        (State.TIME_WAIT, sfin),
    ]
    assert path(r)[-3:] == [State.CLOSE_WAIT, State.LAST_ACK, State.CLOSED]
    ev = res.events
    server_sent_data = (ev.who == R) & (ev.event == Event.SEND_DATA) & (ev.row >= sack)
    assert int(server_sent_data.sum()) == 5


def test_new_data_after_own_fin_is_a_misfit() -> None:
    cap = Cap()
    cap.handshake()
    cap.seg(C, FIN | ACK)
    cap.seg(R, ACK)
    bad = cap.seg(C, ACK | PSH, 10, seq=cap.nxt[C])
    res = cap.run()
    assert res.originator.state is State.FIN_WAIT_2
    assert [(u.state, u.event, u.frame) for u in res.originator.unexpected] == [
        (State.FIN_WAIT_2, Event.SEND_DATA, bad)
    ]


@pytest.mark.parametrize("client_side_capture", [True, False])
def test_lost_final_ack_fin_resent_from_last_ack_restarts_time_wait(
    client_side_capture: bool,
) -> None:
    cap = Cap()
    cap.handshake()
    cap.seg(C, FIN | ACK)
    cap.seg(R, ACK)
    sfin = cap.seg(R, FIN | ACK)
    fin_seq = cap.rows[sfin - 1][2]
    if client_side_capture:
        cap.seg(C, ACK)  # seen here, lost further on
    refin = cap.seg(R, FIN | ACK, seq=fin_seq, dt=200 * MS)
    reack = cap.seg(C, ACK)
    restart = cap.ts(refin)
    res = cap.run(end_ns=restart + TIME_WAIT_NS - 1)
    clean(res)
    o, r = res.originator, res.responder
    # the first 60 s would be over by now; the resent FIN restarted them
    assert cap.ts(sfin) + TIME_WAIT_NS < restart + TIME_WAIT_NS - 1
    assert o.state is State.TIME_WAIT
    assert steps(o)[-2:] == [(State.TIME_WAIT, sfin), (State.TIME_WAIT, refin)]
    assert o.timeline[-1].event is Event.RECV_FIN
    assert steps(r)[-2:] == [(State.LAST_ACK, sfin), (State.CLOSED, reack)]
    reacks = (res.events.who == C) & (res.events.event == Event.SEND_ACK_OF_FIN)
    assert res.events.row[reacks].tolist()[-1] == reack - 1
    later = cap.run(end_ns=restart + TIME_WAIT_NS)
    assert later.originator.timeline[-1] == (
        State.CLOSED,
        restart + TIME_WAIT_NS,
        NO_FRAME,
        Event.TIMEOUT_2MSL,
    )


# ---------------------------------------------------------------------------------------
# resets
# ---------------------------------------------------------------------------------------


def _to_state(target: State) -> tuple[Cap, int]:
    """A capture that leaves one endpoint in `target`; returns it and which endpoint."""
    cap = Cap()
    if target is State.SYN_SENT:
        cap.seg(C, SYN)
        return cap, C
    if target is State.SYN_RECEIVED:
        cap.seg(C, SYN)
        cap.seg(R, SYN | ACK)
        return cap, R
    cap.handshake()
    if target is State.ESTABLISHED:
        return cap, C
    if target is State.CLOSING:
        cap.seg(C, FIN | ACK)
        cap.seg(R, FIN | ACK, ack=1001)
        return cap, C
    cap.seg(C, FIN | ACK)
    if target is State.FIN_WAIT_1:
        return cap, C
    cap.seg(R, ACK)
    if target is State.FIN_WAIT_2:
        return cap, C
    if target is State.CLOSE_WAIT:
        return cap, R
    cap.seg(R, FIN | ACK)
    if target is State.LAST_ACK:
        return cap, R
    assert target is State.TIME_WAIT
    cap.seg(C, ACK)
    return cap, C


SYNCHRONIZING_AND_AFTER = [s for s in State if s not in (State.CLOSED, State.LISTEN)]


@pytest.mark.parametrize("sent", [True, False], ids=["sends-rst", "receives-rst"])
@pytest.mark.parametrize("target", SYNCHRONIZING_AND_AFTER, ids=lambda s: s.name)
def test_rst_closes_from_every_state(target: State, sent: bool) -> None:
    cap, side = _to_state(target)
    before = cap.run()
    assert (before.originator, before.responder)[side].state is target
    rst = cap.seg(side if sent else 1 - side, RST | ACK if sent else RST)
    res = cap.run()
    me = (res.originator, res.responder)[side]
    assert me.timeline[-1].state is State.CLOSED
    assert me.timeline[-1].frame == rst
    assert me.timeline[-1].event is (Event.SEND_RST if sent else Event.RECV_RST)
    assert me.unexpected == []


@pytest.mark.parametrize("event", [Event.SEND_RST, Event.RECV_RST])
def test_rst_in_closed_and_listen_changes_nothing(event: Event) -> None:
    for state in (State.CLOSED, State.LISTEN):
        e = Endpoint(state, 0, 1)
        assert e.handle(event, 10, 2) is state
        assert e.unexpected == [] and len(e.timeline) == 1


# ---------------------------------------------------------------------------------------
# captures that start mid-connection
# ---------------------------------------------------------------------------------------


def test_mid_connection_start_assumes_established() -> None:
    cap = Cap()
    first = cap.seg(R, ACK | PSH, 500)
    cap.seg(C, ACK)
    cfin = cap.seg(C, FIN | ACK)
    cap.seg(R, FIN | ACK)
    cap.seg(C, ACK)
    res = cap.run()
    clean(res)
    for e in (res.originator, res.responder):
        assert e.assumed
        assert e.timeline[0] == (State.ESTABLISHED, cap.ts(first), first, None)
    assert path(res.originator)[1:] == [State.FIN_WAIT_1, State.FIN_WAIT_2, State.TIME_WAIT]
    assert steps(res.responder)[0] == (State.CLOSE_WAIT, cfin)
    assert res.responder.state is State.CLOSED


def test_capture_starting_at_the_syn_ack() -> None:
    cap = Cap()
    cap.seg(R, SYN | ACK, ack=1001)
    cap.nxt[C] = 1001
    cap.seg(C, ACK)
    res = cap.run()
    clean(res)
    assert res.originator.assumed and res.responder.assumed
    assert path(res.originator) == [State.SYN_SENT, State.ESTABLISHED]
    assert path(res.responder) == [State.SYN_RECEIVED, State.ESTABLISHED]


# ---------------------------------------------------------------------------------------
# the Endpoint and the tables
# ---------------------------------------------------------------------------------------


def test_unknown_pairs_are_recorded_not_raised() -> None:
    e = Endpoint(State.LISTEN, 0, 1)
    assert e.handle(Event.RECV_FIN, 5, 2) is State.LISTEN
    assert e.unexpected == [(State.LISTEN, Event.RECV_FIN, 5, 2)]
    assert e.handle(Event.RECV_SYN, 6, 3) is State.SYN_RECEIVED


def test_timer_fires_before_the_next_event_at_its_deadline() -> None:
    e = Endpoint(State.FIN_WAIT_2, 0, 1, time_wait_ns=100)
    e.handle(Event.RECV_FIN, 10, 2)
    e.handle(Event.SEND_ACK_OF_FIN, 20, 3)  # the ACK of the FIN: no restart
    assert e.handle(Event.RECV_DATA, 500, 4) is State.CLOSED
    assert e.timeline[-1] == (State.CLOSED, 110, NO_FRAME, Event.TIMEOUT_2MSL)
    assert e.unexpected == [(State.CLOSED, Event.RECV_DATA, 500, 4)]


def test_tables_do_not_overlap_and_name_every_state() -> None:
    assert not set(TRANSITIONS) & STAYS
    reached = set(TRANSITIONS.values()) | {State.LISTEN}
    assert reached == set(State)
    assert {src for src, _ in TRANSITIONS} == set(State)  # every state has a way out
    # every event except the timer and the ICMP error (no endpoint sends one) comes in a
    # SEND_/RECV_ pair
    names = {e.name for e in Event} - {"TIMEOUT_2MSL", "RECV_ICMP_ERROR"}
    assert {n.split("_", 1)[1] for n in names if n.startswith("SEND_")} == {
        n.split("_", 1)[1] for n in names if n.startswith("RECV_")
    }


def test_same_rules_for_both_endpoints() -> None:
    # mirror a capture: swap who is who, and each endpoint's timeline swaps with it
    cap, _ = four_way_close()
    cols = cap.columns()
    res = cap.run()
    cols[0] = 1 - cols[0]
    mirrored = run_connection(*cols)
    assert mirrored.originator.timeline == res.responder.timeline
    assert mirrored.responder.timeline == res.originator.timeline


def test_derive_events_pairs_send_and_recv() -> None:
    cap, _ = four_way_close()
    st = derive_events(*cap.columns()[:5])
    assert st.start == (State.CLOSED, State.LISTEN) and not st.assumed
    assert len(st.who) == len(st.event) == len(st.row)
    assert np.all(np.diff(st.row) >= 0)
    for who, ev, row in zip(st.who.tolist(), st.event.tolist(), st.row.tolist(), strict=True):
        sender = int(cap.rows[row][0])
        name = Event(ev).name
        assert name.startswith("SEND_" if who == sender else "RECV_"), (row, name)


# ---------------------------------------------------------------------------------------
# the generated diagram and docs
# ---------------------------------------------------------------------------------------


def test_diagram_draws_every_transition() -> None:
    d = diagram()
    assert d.mermaid.startswith("stateDiagram-v2\n")
    assert d.dot.startswith("digraph")
    for src, dst in {(s, t) for (s, _), t in TRANSITIONS.items()}:
        assert f"    {src.name} --> {dst.name} : " in d.mermaid
        assert f"  {src.name} -> {dst.name} [label=" in d.dot
    assert "TIME_WAIT --> TIME_WAIT : rcv FIN (restart 2MSL)" in d.mermaid


def test_docs_page_is_generated_from_the_table() -> None:
    text = (REPO / "docs" / "state-machine.md").read_text()
    assert DOC_BEGIN in text and DOC_END in text, "markers missing from docs/state-machine.md"
    inside = text.split(DOC_BEGIN, 1)[1].split(DOC_END, 1)[0]
    assert inside.strip("\n") == docs_block().strip("\n"), (
        "docs/state-machine.md is out of date: run python docs/gen_state_diagram.py"
    )


def test_generator_check_mode() -> None:
    script = REPO / "docs" / "gen_state_diagram.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------------------------------
# real traces
# ---------------------------------------------------------------------------------------


def _tshark_connection(tsv: Path, orig_port: str, resp_port: str) -> list[dict[str, str]]:
    with tsv.open() as fh:
        return [
            row
            for row in csv.DictReader(fh, delimiter="\t")
            if {row["tcp.srcport"], row["tcp.dstport"]} == {orig_port, resp_port}
        ]


@pytest.mark.corpus
def test_real_simultaneous_close_from_tshark_fields(zeek_corpus: Path) -> None:
    # ssh-basic.pcap, client port 57191: both sides send FIN before seeing the other's,
    # the client resends its FIN together with the ACK of the server's
    rows = _tshark_connection(zeek_corpus / "tshark" / "ssh-basic.pcap.tshark.tsv", "57191", "22")
    assert rows, "connection not found in the tshark fields"
    res = run_connection(
        [0 if r["tcp.srcport"] == "57191" else 1 for r in rows],
        [int(r["tcp.flags"], 16) for r in rows],
        [int(r["tcp.seq_raw"]) for r in rows],
        [int(r["tcp.ack_raw"]) for r in rows],
        [int(r["tcp.len"]) for r in rows],
        [round(float(r["frame.time_relative"]) * SEC) for r in rows],
        [int(r["frame.number"]) for r in rows],
    )
    clean(res)
    for e in (res.originator, res.responder):
        assert State.CLOSING in path(e)
        assert State.ESTABLISHED in path(e)
        assert e.state is State.TIME_WAIT
    # a retransmitted FIN reached the server in TIME_WAIT and restarted its timer
    assert path(res.responder)[-2:] == [State.TIME_WAIT, State.TIME_WAIT]


@pytest.mark.corpus
def test_real_capture_through_read_table(zeek_corpus: Path) -> None:
    from tcpwhy.capture import read_table

    table = read_table(str(zeek_corpus / "ldap-who-am-i.pcap"))
    # one connection (Zeek: SF, history ShADadFf): the client at 48122 closes first
    rows = np.flatnonzero((table["sport"] == 48122) | (table["dport"] == 48122))
    assert len(rows) == 13
    direction = (table["sport"][rows] != 48122).astype(np.uint8)
    last = int(table["ts_ns"][rows[-1]])
    res = run_rows(table, rows, direction)
    clean(res)
    o, r = res.originator, res.responder
    assert path(o) == [
        State.CLOSED,
        State.SYN_SENT,
        State.ESTABLISHED,
        State.FIN_WAIT_1,
        State.FIN_WAIT_2,
        State.TIME_WAIT,
    ]
    assert path(r) == [
        State.LISTEN,
        State.SYN_RECEIVED,
        State.ESTABLISHED,
        State.CLOSE_WAIT,
        State.LAST_ACK,
        State.CLOSED,
    ]
    assert o.timeline[1].frame == 1 and r.timeline[-1].frame == 13
    later = run_rows(table, rows, direction, end_ns=last + TIME_WAIT_NS)
    assert later.originator.state is State.CLOSED


# ---------------------------------------------------------------------------------------
# ICMP errors
# ---------------------------------------------------------------------------------------


def test_an_icmp_error_ends_a_connect() -> None:
    cap = Cap()
    cap.seg(C, SYN)
    icmp = cap.seg(C, ICMP_ERROR_ROW, dt=300_000)
    res = cap.run()
    assert steps(res.originator) == [(State.SYN_SENT, 1), (State.CLOSED, icmp)]
    assert res.originator.timeline[-1].event is Event.RECV_ICMP_ERROR
    assert res.originator.timeline[-1].ts_ns == cap.ts(icmp)
    assert path(res.responder) == [State.LISTEN, State.SYN_RECEIVED]
    clean(res)


def test_a_syn_resent_after_an_icmp_error_shows_it_was_soft() -> None:
    # Linux takes an error that arrives while connect() holds the socket as a soft one:
    # it resends the SYN, and the handshake may still complete
    cap = Cap()
    cap.seg(C, SYN)
    cap.seg(C, ICMP_ERROR_ROW)
    cap.seg(C, SYN, seq=1000, dt=SEC)
    cap.seg(R, SYN | ACK, ack=1001)
    cap.seg(C, ACK)
    res = cap.run()
    assert path(res.originator) == [State.CLOSED, State.SYN_SENT, State.ESTABLISHED]
    clean(res)


def test_an_icmp_error_outside_syn_sent_changes_nothing() -> None:
    cap = Cap()
    cap.seg(C, SYN)
    cap.seg(R, SYN | ACK)
    cap.seg(R, ICMP_ERROR_ROW)  # about the SYN-ACK: the machine keeps SYN_RECEIVED
    cap.seg(C, ACK)
    cap.seg(C, ACK | PSH, 10)
    cap.seg(C, ICMP_ERROR_ROW)  # a soft error of an established connection
    cap.seg(R, ACK)
    res = cap.run()
    assert path(res.originator) == [State.CLOSED, State.SYN_SENT, State.ESTABLISHED]
    assert path(res.responder) == [State.LISTEN, State.SYN_RECEIVED, State.ESTABLISHED]
    clean(res)
    st = derive_events(*cap.columns()[:5])
    got = [(int(w), int(r)) for w, e, r in zip(st.who, st.event, st.row, strict=True)
           if e == Event.RECV_ICMP_ERROR]  # fmt: skip
    assert got == [(R, 2), (C, 5)]
