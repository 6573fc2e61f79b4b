"""The TCP connection state machine (RFC 9293 §3.3.2) of both endpoints, rebuilt from a capture.

The rules are the two tables below, read as "in STATE, on EVENT, go to NEW
STATE". The same tables drive both endpoints: a segment the originator sent
is a ``SEND_*`` event for the originator and the matching ``RECV_*`` event for
the responder, and vice versa. Nothing here reads files or sockets; events go
in, states and a timeline come out (sans-I/O, in the style of h11's
``_state.py``), so the rules can be tested, drawn and reused without a
capture.

Events
------
Each segment carries up to six facts, taken in this order (the order in which
RFC 9293 §3.10.7.4 processes a segment: SYN, then the ACK field, then the
text, then FIN): SYN (or SYN-ACK), "acknowledges the peer's SYN",
"acknowledges the peer's FIN", data, FIN. A RST is a fact of its own and the
rest of that segment is ignored. An ICMP error about a segment (destination
unreachable, time exceeded, parameter problem; not "fragmentation needed" or
"packet too big", which only lower the path MTU) is a row of its own among the
connection's segments (`ICMP_ERROR_ROW`), and an event, ``RECV_ICMP_ERROR``,
for the side whose segment it quotes. "Acknowledges the peer's FIN" means: the ACK
flag is set and ``ack >= fin_seq + 1`` in 32-bit sequence arithmetic; it is
reported once per FIN transmission, so a re-ACK of a retransmitted FIN is an
event and a plain later ACK is not (the same holds for the SYN).

Where the capture point is
--------------------------
A capture sees each segment once, at one point on the path. For the endpoint
on the far side of that point, "the peer's FIN reached me" is inferred from
the time the FIN passed the capture point, so every inferred transition time
is that of the capture point, off by up to the one-way delay between it and
the endpoint (and wrong outright if the segment was lost after the capture
point). When the capture is taken on one of the hosts, that host's
transitions are exact. Where capture order and ACK fields disagree about
what an endpoint had received, the ACK fields win:

* a FIN reaches an endpoint after the last of its segments that does not
  acknowledge it (so a FIN crossing the peer's FIN makes a simultaneous
  close, both endpoints through CLOSING, wherever the capture was taken);
  one it never acknowledges while it keeps sending was lost;
* an ACK of a SYN or FIN followed by a resend of that SYN or FIN was lost
  after the capture point, so its receiver never saw it;
* a SYN-ACK the capture missed (one-way captures) is inferred when the SYN's
  sender acknowledges it or the other side starts talking.

Choices
-------
* A capture that starts mid-connection (first segment is not a SYN): both
  endpoints start in ESTABLISHED, flagged ``Endpoint.assumed``. A first
  segment that is a SYN-ACK (its SYN was missed) starts the sender in
  SYN_RECEIVED and the receiver in SYN_SENT, also assumed.
* The first timeline entry is the state the endpoint was in when the capture
  first saw the connection, dated at that first segment, not when it was
  entered.
* A responder whose first answer to a SYN is a RST starts in CLOSED (no
  listener: RFC 9293 answers a segment in CLOSED with RST); otherwise it
  starts in LISTEN. Such a side never had a socket, and the views show it as
  "no listener" (``state_label``) rather than as a state it never was in; a
  responder that never sent a packet is shown as "no answer" where the
  machine has it in SYN_RECEIVED (nothing shows the SYN arrived).
* Sending or receiving a RST closes the connection from every state except
  LISTEN, which by RFC 9293 ignores a RST (the listening socket survives).
* TIME_WAIT lasts 2 MSL, Linux's fixed 60 s (``TCP_TIMEWAIT_LEN``), measured
  in capture time. A retransmitted FIN arriving in TIME_WAIT (which the
  endpoint re-ACKs) restarts it, as RFC 9293 and Linux do; that re-entry is
  recorded in the timeline.
* Entering FIN_WAIT_2 and TIME_WAIT on one segment that both acknowledges my
  FIN and carries the peer's FIN passes through FIN_WAIT_2 for zero time, as
  Linux does, rather than taking RFC 9293's direct FIN_WAIT_1 → TIME_WAIT.
* An ICMP error ends a connection in SYN_SENT (Linux ends the connect() at once
  with the error's errno: ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EACCES...),
  unless the same side resends its SYN after it: Linux takes an error that
  arrives while the application holds the socket as a soft one, and the
  resent SYN shows the socket lived on. In every other state an ICMP error
  changes nothing: Linux records it as a soft error of an established
  connection, ignores it in TIME_WAIT, and drops a listener's half-open
  connection on some codes and keeps it on others (IPv4 and IPv6 differ);
  the machine keeps SYN_RECEIVED.
* Events that fit no rule leave the state alone and are kept in
  ``Endpoint.unexpected``: captures are messy, and the misfits are clues.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import ACK, FIN, RST, SYN, too_big_rows
from tcpwhy.tcp.seq import U32, seq_geq

if TYPE_CHECKING:
    from tcpwhy.decode.table import PacketTable


class State(IntEnum):
    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10


class Event(IntEnum):
    """What one endpoint did or had happen to it; ``SEND_X`` and ``RECV_X`` come in pairs."""

    SEND_SYN = 0
    SEND_SYNACK = 1
    SEND_ACK_OF_SYN = 2  # I acknowledged the peer's SYN (completes its handshake)
    SEND_ACK_OF_FIN = 3  # I acknowledged the peer's FIN
    SEND_DATA = 4
    SEND_FIN = 5
    SEND_RST = 6
    RECV_SYN = 7
    RECV_SYNACK = 8
    RECV_ACK_OF_SYN = 9  # the peer acknowledged my SYN: my handshake completes
    RECV_ACK_OF_FIN = 10  # the peer acknowledged my FIN
    RECV_DATA = 11
    RECV_FIN = 12
    RECV_RST = 13
    TIMEOUT_2MSL = 14  # the TIME_WAIT timer ran out (capture time)
    RECV_ICMP_ERROR = 15  # an ICMP error (not "too big") quoting a segment I sent


S, E = State, Event

TRANSITIONS: dict[tuple[State, Event], State] = {
    # --- opening ---------------------------------------------------------------------
    (S.CLOSED, E.SEND_SYN): S.SYN_SENT,  # active open
    (S.LISTEN, E.RECV_SYN): S.SYN_RECEIVED,  # passive open
    (S.LISTEN, E.SEND_SYN): S.SYN_SENT,  # RFC 9293: SEND on a listening socket
    (S.SYN_SENT, E.RECV_SYNACK): S.ESTABLISHED,
    (S.SYN_SENT, E.RECV_SYN): S.SYN_RECEIVED,  # simultaneous open
    (S.SYN_RECEIVED, E.RECV_ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RECEIVED, E.RECV_SYNACK): S.ESTABLISHED,  # simultaneous open
    # --- closing ---------------------------------------------------------------------
    (S.SYN_RECEIVED, E.SEND_FIN): S.FIN_WAIT_1,
    (S.SYN_RECEIVED, E.RECV_FIN): S.CLOSE_WAIT,
    (S.ESTABLISHED, E.SEND_FIN): S.FIN_WAIT_1,  # active close
    (S.ESTABLISHED, E.RECV_FIN): S.CLOSE_WAIT,  # passive close
    (S.FIN_WAIT_1, E.RECV_ACK_OF_FIN): S.FIN_WAIT_2,
    (S.FIN_WAIT_1, E.RECV_FIN): S.CLOSING,  # simultaneous close
    (S.FIN_WAIT_2, E.RECV_FIN): S.TIME_WAIT,
    (S.CLOSING, E.RECV_ACK_OF_FIN): S.TIME_WAIT,
    (S.CLOSE_WAIT, E.SEND_FIN): S.LAST_ACK,
    (S.LAST_ACK, E.RECV_ACK_OF_FIN): S.CLOSED,
    (S.TIME_WAIT, E.RECV_FIN): S.TIME_WAIT,  # retransmitted FIN: re-ACK, restart 2 MSL
    (S.TIME_WAIT, E.TIMEOUT_2MSL): S.CLOSED,
    # --- an ICMP error ends a connect(): ECONNREFUSED, EHOSTUNREACH, ENETUNREACH ----
    (S.SYN_SENT, E.RECV_ICMP_ERROR): S.CLOSED,
    # --- reset: from every state but CLOSED and LISTEN -------------------------------
    **{
        (state, ev): S.CLOSED
        for state in State
        if state not in (S.CLOSED, S.LISTEN)
        for ev in (E.SEND_RST, E.RECV_RST)
    },
}
"""(state, event) -> state entered. A self-loop re-enters the state (restarting its timer)."""

STAYS: frozenset[tuple[State, Event]] = frozenset(
    [
        # retransmitted handshake segments
        (S.SYN_SENT, E.SEND_SYN),
        (S.SYN_RECEIVED, E.RECV_SYN),
        (S.SYN_RECEIVED, E.SEND_SYNACK),  # the answer to the SYN, and its retransmissions
        (S.SYN_RECEIVED, E.SEND_SYN),  # simultaneous open
        (S.ESTABLISHED, E.RECV_SYNACK),  # our ACK of it was lost
        (S.ESTABLISHED, E.SEND_ACK_OF_SYN),
        # a SYN to a closed port, answered by RST; resets on both sides after a reset
        (S.CLOSED, E.RECV_SYN),
        (S.CLOSED, E.SEND_RST),
        (S.CLOSED, E.RECV_RST),
        (S.LISTEN, E.SEND_RST),
        (S.LISTEN, E.RECV_RST),
        # data: TCP Fast Open during the handshake, both ways while established,
        # the open direction of a half-closed connection, and retransmissions of
        # data sent before a FIN
        (S.SYN_SENT, E.SEND_DATA),
        (S.SYN_RECEIVED, E.SEND_DATA),
        (S.SYN_RECEIVED, E.RECV_DATA),
        (S.ESTABLISHED, E.SEND_DATA),
        (S.ESTABLISHED, E.RECV_DATA),
        (S.FIN_WAIT_1, E.SEND_DATA),
        (S.FIN_WAIT_1, E.RECV_DATA),
        (S.FIN_WAIT_2, E.RECV_DATA),
        (S.CLOSE_WAIT, E.SEND_DATA),
        (S.CLOSE_WAIT, E.RECV_DATA),
        (S.CLOSING, E.SEND_DATA),
        (S.CLOSING, E.RECV_DATA),
        (S.LAST_ACK, E.SEND_DATA),
        (S.LAST_ACK, E.RECV_DATA),
        # FIN retransmissions and their (re-)ACKs
        (S.FIN_WAIT_1, E.SEND_FIN),
        (S.CLOSING, E.SEND_FIN),
        (S.LAST_ACK, E.SEND_FIN),
        (S.CLOSE_WAIT, E.RECV_FIN),
        (S.CLOSING, E.RECV_FIN),
        (S.LAST_ACK, E.RECV_FIN),
        (S.CLOSE_WAIT, E.SEND_ACK_OF_FIN),
        (S.CLOSING, E.SEND_ACK_OF_FIN),
        (S.LAST_ACK, E.SEND_ACK_OF_FIN),
        (S.TIME_WAIT, E.SEND_ACK_OF_FIN),
        (S.FIN_WAIT_2, E.RECV_ACK_OF_FIN),
        (S.TIME_WAIT, E.RECV_ACK_OF_FIN),
        # ICMP errors outside SYN_SENT: soft errors, ignored, or (a listener's half-open
        # connection) dropped on some codes only; see the module docstring
        *((state, E.RECV_ICMP_ERROR) for state in State if state is not S.SYN_SENT),
    ]
)
"""(state, event) pairs that are expected and change nothing."""

del S, E

STAY, UNEXPECTED = -1, -2
"""Entries of `next_state_table` for an expected event that changes nothing, and for a misfit."""


def next_state_table() -> npt.NDArray[np.int8]:
    """TRANSITIONS and STAYS as one dense array ``NEXT[state, event]``, for compiled code.

    Each entry is the state entered, `STAY` or `UNEXPECTED`; a pair in both
    tables is a transition, as in `Endpoint`. Built from the tables, so they
    stay the one place where the rules are written.
    """
    tab = np.full((len(State), len(Event)), UNEXPECTED, np.int8)
    for st, ev in STAYS:
        tab[st, ev] = STAY
    for (st, ev), new in TRANSITIONS.items():
        tab[st, ev] = new
    return tab


TIME_WAIT_NS = 60 * 1_000_000_000
"""2 MSL as Linux implements it: TCP_TIMEWAIT_LEN, a fixed 60 s."""

ICMP_ERROR_ROW = 0x8000
"""`flags` of a row that stands for an ICMP error (not "too big") about the segment its
direction's side sent, placed among the connection's segments in capture order (its
seq, ack and payload are not read). TCP's flags take the low 12 bits, so the bit is free.
Such rows come after a connection's first segment: an error quotes a segment sent before
it (`with_icmp_rows` places them)."""

NO_FRAME = 0
"""Frame number of a step no packet caused (a timer); Wireshark's frames start at 1."""


NO_SOCKET = "no listener"
"""How a side that never had a socket is shown (a responder that answered the SYN with RST
from CLOSED: nothing listened). CLOSED is RFC 9293's name for "no connection state at
all", but read in a table beside SYN_SENT it looks like a socket that once existed."""


NO_ANSWER = "no answer"
"""How a responder is shown in SYN_RECEIVED when it never sent a packet: the machine
assumes the SYN arrived, but nothing shows that it did (dropped on the way, or by a
firewall, or the host is down)."""


def state_label(state: State, timeline: Sequence[State], sent: bool = True) -> str:
    """The name a person reads for `state`, given every state that side was in and whether
    it sent anything: a side CLOSED throughout never existed (`NO_SOCKET`), and a silent
    side is not claimed to have received a SYN (`NO_ANSWER`)."""
    if state is State.CLOSED and all(s is State.CLOSED for s in timeline):
        return NO_SOCKET
    if state is State.SYN_RECEIVED and not sent:
        return NO_ANSWER
    return state.name


class Step(NamedTuple):
    """One entry of an endpoint's timeline: the state it entered, when, and why."""

    state: State
    ts_ns: int
    frame: int
    event: Event | None  # None for the starting state


class Unexpected(NamedTuple):
    state: State
    event: Event
    ts_ns: int
    frame: int


class Endpoint:
    """One side of a connection, driven by events; keeps the timeline of states it entered."""

    __slots__ = (
        "assumed",
        "state",
        "time_wait_deadline_ns",
        "time_wait_ns",
        "timeline",
        "unexpected",
    )

    def __init__(
        self,
        state: State = State.CLOSED,
        ts_ns: int = 0,
        frame: int = NO_FRAME,
        *,
        assumed: bool = False,
        time_wait_ns: int = TIME_WAIT_NS,
    ) -> None:
        self.state = state
        self.assumed = assumed  # the starting state is a guess (capture began mid-connection)
        self.time_wait_ns = time_wait_ns
        self.time_wait_deadline_ns: int | None = (
            ts_ns + time_wait_ns if state is State.TIME_WAIT else None
        )
        self.timeline: list[Step] = [Step(state, ts_ns, frame, None)]
        self.unexpected: list[Unexpected] = []

    def advance(self, now_ns: int) -> State:
        """Let capture time pass: fires the 2MSL timer, dated at its deadline, if it is due."""
        deadline = self.time_wait_deadline_ns
        if deadline is not None and now_ns >= deadline:
            self._apply(Event.TIMEOUT_2MSL, deadline, NO_FRAME)
        return self.state

    def handle(self, event: Event, ts_ns: int, frame: int) -> State:
        """Apply one event seen at capture time `ts_ns`; a timer due before it fires first."""
        if event is not Event.TIMEOUT_2MSL:
            self.advance(ts_ns)
        self._apply(event, ts_ns, frame)
        return self.state

    def _apply(self, event: Event, ts_ns: int, frame: int) -> None:
        key = (self.state, event)
        new = TRANSITIONS.get(key)
        if new is None:
            if key not in STAYS:
                self.unexpected.append(Unexpected(self.state, event, ts_ns, frame))
            return
        self.state = new
        self.time_wait_deadline_ns = ts_ns + self.time_wait_ns if new is State.TIME_WAIT else None
        self.timeline.append(Step(new, ts_ns, frame, event))

    def __repr__(self) -> str:
        return f"Endpoint({self.state.name}, {len(self.timeline)} steps, {len(self.unexpected)} unexpected)"


# ---------------------------------------------------------------------------------------
# From packets to events
# ---------------------------------------------------------------------------------------

ORIGINATOR, RESPONDER = 0, 1

_MAX_EVENTS_PER_SEGMENT = 16


class EventStream(NamedTuple):
    """Events of one connection in the order to apply them; `row` indexes the packet arrays."""

    start: tuple[State, State]  # (originator, responder) before the first packet
    assumed: bool  # starting states are guesses: the capture missed the SYN
    who: npt.NDArray[np.uint8]  # ORIGINATOR or RESPONDER
    event: npt.NDArray[np.uint8]  # Event values
    row: npt.NDArray[np.int64]


# delivery of one side's FIN to its peer
_FIN_NOT_DELIVERED, _FIN_PENDING, _FIN_DELIVERED = 0, 1, 2
_NEVER = -2


def derive_events(
    direction: npt.ArrayLike,
    flags: npt.ArrayLike,
    seq: npt.ArrayLike,
    ack: npt.ArrayLike,
    payload_len: npt.ArrayLike,
) -> EventStream:
    """Turn one connection's packets (capture order) into events for both endpoints.

    Kept apart from the state machine, over plain integer arrays, so it can be
    compiled or vectorised without touching the rules. Where the capture
    order and the ACK fields disagree about what an endpoint had received,
    the ACK fields win (see the module docstring).
    """
    d_ = _as_list(direction)
    f_ = _as_list(flags)
    s_ = _as_list(seq)
    a_ = _as_list(ack)
    p_ = _as_list(payload_len)
    n = len(d_)
    who = np.empty(n * _MAX_EVENTS_PER_SEGMENT, np.uint8)
    evs = np.empty(n * _MAX_EVENTS_PER_SEGMENT, np.uint8)
    rows = np.empty(n * _MAX_EVENTS_PER_SEGMENT, np.int64)
    if n == 0:
        return EventStream((State.CLOSED, State.CLOSED), False, who, evs, rows)

    start, assumed = _start_states(d_, f_)

    # per side (0, 1), about that side's own SYN and FIN
    syn_seen = [False, False]  # sent a SYN or a SYN-ACK
    bare_syn = [False, False]  # sent a SYN without ACK
    syn_end = [0, 0]  # seq just past the SYN
    syn_unacked = [False, False]  # the peer has not acknowledged it yet
    fin_end = [0, 0]  # seq just past the FIN
    fin_unacked = [False, False]  # the peer has not acknowledged this transmission yet
    fin_delivery = [_FIN_NOT_DELIVERED, _FIN_NOT_DELIVERED]
    fin_deliver_after = [-1, -1]  # row after which the peer gets the pending RECV_FIN
    k = 0

    def put(side: int, ev: Event, row: int) -> None:
        nonlocal k
        who[k] = side
        evs[k] = ev
        rows[k] = row
        k += 1

    for i in range(n):
        s = 1 if d_[i] else 0
        r = 1 - s
        fl = f_[i]
        sq = s_[i]
        ak = a_[i]
        plen = p_[i]
        if fl & ICMP_ERROR_ROW:
            # an error about s's segment; s resending its SYN after it shows it was soft
            if not _resent_after(d_, f_, i, s, SYN):
                put(s, Event.RECV_ICMP_ERROR, i)
            continue
        if fl & RST:
            put(s, Event.SEND_RST, i)
            put(r, Event.RECV_RST, i)
            continue
        has_ack = bool(fl & ACK)
        if not fl & SYN and (
            (bare_syn[s] and not syn_seen[r] and has_ack) or (bare_syn[r] and not syn_seen[s])
        ):
            # a SYN-ACK the capture missed: its receiver ACKs it, or its sender is talking
            b = r if bare_syn[s] else s
            put(b, Event.SEND_SYNACK, i)
            put(1 - b, Event.RECV_SYNACK, i)
            syn_seen[b] = True
            syn_end[b] = sq if b == s else ak
            syn_unacked[b] = True
        if fl & SYN:
            if has_ack:
                put(s, Event.SEND_SYNACK, i)
                if not _resent_after(d_, f_, i, r, SYN):
                    put(r, Event.RECV_SYNACK, i)
                if syn_unacked[r] and seq_geq(ak, syn_end[r]):
                    syn_unacked[r] = False  # the SYN-ACK itself acknowledges r's SYN
            else:
                put(s, Event.SEND_SYN, i)
                put(r, Event.RECV_SYN, i)
                bare_syn[s] = True
            syn_seen[s] = True
            syn_end[s] = (sq + 1) & U32
            syn_unacked[s] = True
        elif has_ack and syn_unacked[r] and seq_geq(ak, syn_end[r]):
            syn_unacked[r] = False
            put(s, Event.SEND_ACK_OF_SYN, i)
            if not _resent_after(d_, f_, i, r, SYN):
                put(r, Event.RECV_ACK_OF_SYN, i)
        if has_ack and fin_unacked[r] and seq_geq(ak, fin_end[r]):
            fin_unacked[r] = False
            put(s, Event.SEND_ACK_OF_FIN, i)
            if not _resent_after(d_, f_, i, r, FIN):
                put(r, Event.RECV_ACK_OF_FIN, i)
        if plen:
            put(s, Event.SEND_DATA, i)
            put(r, Event.RECV_DATA, i)
        if fl & FIN:
            put(s, Event.SEND_FIN, i)
            fin_end[s] = (sq + (1 if fl & SYN else 0) + plen + 1) & U32
            fin_unacked[s] = True
            if fin_delivery[s] == _FIN_DELIVERED:
                put(r, Event.RECV_FIN, i)  # a retransmission reaching r again
            elif fin_delivery[s] == _FIN_NOT_DELIVERED:
                j = _fin_arrival(d_, f_, a_, i, r, fin_end[s])
                if j == i:
                    put(r, Event.RECV_FIN, i)
                    fin_delivery[s] = _FIN_DELIVERED
                elif j > i:
                    fin_delivery[s] = _FIN_PENDING
                    fin_deliver_after[s] = j
        if fin_delivery[r] == _FIN_PENDING and fin_deliver_after[r] == i:
            put(s, Event.RECV_FIN, i)
            fin_delivery[r] = _FIN_DELIVERED
    return EventStream(start, assumed, who[:k], evs[:k], rows[:k])


def _as_list(a: npt.ArrayLike) -> list[int]:
    out: list[int] = np.asarray(a).astype(np.int64, copy=False).tolist()
    return out


def _start_states(d_: Sequence[int], f_: Sequence[int]) -> tuple[tuple[State, State], bool]:
    """States before the first packet; see the module docstring for the choices."""
    s = 1 if d_[0] else 0
    fl = f_[0]
    states = [State.ESTABLISHED, State.ESTABLISHED]
    assumed = True
    if fl & SYN and not fl & (RST | ACK):
        assumed = False
        states[s] = State.CLOSED
        states[1 - s] = State.LISTEN
        for i in range(1, len(d_)):
            if (1 if d_[i] else 0) != s and not f_[i] & ICMP_ERROR_ROW:
                if f_[i] & RST:
                    states[1 - s] = State.CLOSED  # nobody listening
                break
    elif fl & SYN and fl & ACK and not fl & RST:
        states[s] = State.SYN_RECEIVED
        states[1 - s] = State.SYN_SENT
    return (states[0], states[1]), assumed


def _resent_after(d_: Sequence[int], f_: Sequence[int], i: int, r: int, bit: int) -> bool:
    """Whether r's next segment after row i resends its SYN or FIN.

    Then the ACK at row i, though the capture saw it, was lost on its way to
    r, and r never learned of it (or the ICMP error at row i was a soft one).
    """
    for j in range(i + 1, len(d_)):
        if (1 if d_[j] else 0) == r and not f_[j] & ICMP_ERROR_ROW:
            return bool(f_[j] & bit) and not f_[j] & RST
    return False


def _fin_arrival(
    d_: Sequence[int], f_: Sequence[int], a_: Sequence[int], i: int, r: int, fin_end: int
) -> int:
    """Row after which the FIN sent at row i is taken to have reached r; _NEVER if it did not.

    r's own segments bound it: the FIN arrived after the last of them that
    does not acknowledge it and before the first that does. The arrival is
    dated at the earlier bound, at the FIN itself when r sent nothing in
    between. If r kept sending and never acknowledged it, it was lost after
    the capture point. A crossing FIN (simultaneous close) is the case where
    the segment in between is r's own FIN.
    """
    last = i
    for j in range(i + 1, len(d_)):
        if (1 if d_[j] else 0) != r or not f_[j] & ACK or f_[j] & ICMP_ERROR_ROW:
            continue
        if seq_geq(a_[j], fin_end):
            return last
        last = j
    return i if last == i else _NEVER


class ConnectionStates(NamedTuple):
    originator: Endpoint
    responder: Endpoint
    events: EventStream


def run_connection(
    direction: npt.ArrayLike,
    flags: npt.ArrayLike,
    seq: npt.ArrayLike,
    ack: npt.ArrayLike,
    payload_len: npt.ArrayLike,
    ts_ns: npt.ArrayLike,
    frame: npt.ArrayLike,
    *,
    end_ns: int | None = None,
    time_wait_ns: int = TIME_WAIT_NS,
) -> ConnectionStates:
    """Rebuild both endpoints' state timelines from one connection's packets (capture order).

    `direction` is 0 for originator → responder, 1 for the reverse. `end_ns`
    is when the capture ended: timers due by then fire (a TIME_WAIT that
    began 60 s before it ends in CLOSED); without it, time stops at the
    connection's last packet.
    """
    stream = derive_events(direction, flags, seq, ack, payload_len)
    ts = _as_list(ts_ns)
    fr = _as_list(frame)
    t0, f0 = (ts[0], fr[0]) if ts else (0, NO_FRAME)
    ends = [
        Endpoint(st, t0, f0, assumed=stream.assumed, time_wait_ns=time_wait_ns)
        for st in stream.start
    ]
    for side, ev, row in zip(
        stream.who.tolist(), stream.event.tolist(), stream.row.tolist(), strict=True
    ):
        ends[side].handle(Event(ev), ts[row], fr[row])
    if end_ns is not None:
        for e in ends:
            e.advance(end_ns)
    return ConnectionStates(ends[0], ends[1], stream)


def run_rows(
    table: PacketTable,
    rows: npt.ArrayLike,
    direction: npt.ArrayLike,
    *,
    end_ns: int | None = None,
    time_wait_ns: int = TIME_WAIT_NS,
    icmp: IcmpErrorRows | None = None,
) -> ConnectionStates:
    """`run_connection` on the rows of a packet table that make up one connection; `icmp`:
    the ICMP errors about it (connection 0), keyed by the table row they came before."""
    idx = np.asarray(rows)
    cols = (
        np.asarray(direction),
        *(table[name][idx] for name in ("flags", "seq", "ack", "payload_len", "ts_ns", "frame")),
    )
    if icmp is not None:
        cols, _ = with_icmp_rows(np.array([0, len(idx)]), idx, cols, icmp)
    return run_connection(*cols, end_ns=end_ns, time_wait_ns=time_wait_ns)


class IcmpErrorRows(NamedTuple):
    """ICMP errors (not "too big") to run among connections' segments, one entry each: its
    connection (an index of the segments' `offsets`), its place in capture order (`key`, on
    the scale of the segments' keys: an error comes before a segment of the same key), the
    side whose segment it quotes (0 the originator), its time and frame."""

    conn: npt.NDArray[np.int64]
    key: npt.NDArray[np.int64]
    direction: npt.NDArray[np.uint8]
    ts_ns: npt.NDArray[np.int64]
    frame: npt.NDArray[np.uint64]


def with_icmp_rows(
    offsets: npt.ArrayLike,
    key: npt.ArrayLike,
    cols: Sequence[npt.NDArray[Any]],
    icmp: IcmpErrorRows,
) -> tuple[tuple[npt.NDArray[Any], ...], npt.NDArray[np.int64]]:
    """Connections' segments (`cols`: direction, flags, seq, ack, payload_len, ts_ns, frame;
    connection c the rows ``offsets[c]:offsets[c + 1]``, `key` not decreasing along them)
    with the ICMP errors placed among them as `ICMP_ERROR_ROW` rows, and the new offsets.
    An error before its connection's first segment is left out (it quotes nothing seen)."""
    off = np.asarray(offsets, np.int64)
    nconn = len(off) - 1
    keys = np.asarray(key, np.int64)
    sizes = np.diff(off)
    conn = np.repeat(np.arange(nconn, dtype=np.int64), sizes)
    ic = np.asarray(icmp.conn, np.int64)
    ik = np.asarray(icmp.key, np.int64)
    ok = (ic >= 0) & (ic < nconn)
    ok[ok] = sizes[ic[ok]] > 0
    ok[ok] = ik[ok] > keys[off[ic[ok]]]
    m = int(ok.sum())
    if m == 0:
        return tuple(cols), off
    ic, ik = ic[ok], ik[ok]
    # stable, segments after errors of the same key: conn, then key, then segment last
    order = np.lexsort(
        (
            np.r_[np.ones(len(keys), np.int8), np.zeros(m, np.int8)],
            np.r_[keys, ik],
            np.r_[conn, ic],
        )
    )
    extra: tuple[npt.NDArray[Any], ...] = (
        np.asarray(icmp.direction)[ok],
        np.full(m, ICMP_ERROR_ROW),
        np.zeros(m),
        np.zeros(m),
        np.zeros(m),
        np.asarray(icmp.ts_ns)[ok],
        np.asarray(icmp.frame)[ok],
    )
    out = tuple(
        np.concatenate([np.asarray(c), x.astype(np.asarray(c).dtype)])[order]
        for c, x in zip(cols, extra, strict=True)
    )
    added = np.bincount(ic, minlength=nconn)
    return out, off + np.r_[0, np.cumsum(added)]


def icmp_errors(
    icmp: PacketTable | None, joined: dict[str, npt.NDArray[Any]] | None
) -> dict[str, npt.NDArray[Any]]:
    """A chunk's ICMP errors about its streams (`joined`: `StreamTracker.icmp_out`), the ones
    the machine takes, as columns: `stream`, `dir` (of the segment quoted), `at` (the chunk's
    TCP row it came before), `ts_ns`, `frame`. Not "too big" (fragmentation needed, packet
    too big): path MTU discovery's, which answers a segment too large for the path and ends
    no connect(). No rows without a chunk."""
    if icmp is None or joined is None or not len(icmp):
        return {
            "stream": np.zeros(0, np.int64),
            "dir": np.zeros(0, np.int8),
            "at": np.zeros(0, np.int64),
            "ts_ns": np.zeros(0, np.int64),
            "frame": np.zeros(0, np.uint64),
        }
    too_big = too_big_rows(icmp["ip_version"], icmp["icmp_type"], icmp["icmp_code"])
    s = np.asarray(joined["stream"], np.int64)
    j = np.flatnonzero(~too_big & (s >= 0))
    return {
        "stream": s[j],
        "dir": np.asarray(joined["dir"])[j].astype(np.int8),
        "at": np.asarray(icmp["icmp_at"])[j].astype(np.int64),
        "ts_ns": np.asarray(icmp["ts_ns"])[j].astype(np.int64),
        "frame": np.asarray(icmp["frame"])[j].astype(np.uint64),
    }


# ---------------------------------------------------------------------------------------
# Pictures of the rules
# ---------------------------------------------------------------------------------------


class Diagram(NamedTuple):
    dot: str
    mermaid: str


def _label(ev: Event) -> str:
    name = ev.name
    words = name[5:].replace("SYNACK", "SYN-ACK").replace("_OF_", " of ")
    if name.startswith("SEND_"):
        return "snd " + words
    if name.startswith("RECV_"):
        return "rcv " + words.replace("ICMP_ERROR", "ICMP error")
    return name.replace("_", " ").lower().replace("2msl", "2MSL")


def _edges() -> list[tuple[State, State, str]]:
    """TRANSITIONS grouped by (from, to), labels in event order; RST edges merged."""
    grouped: dict[tuple[State, State], list[Event]] = {}
    for (src, ev), dst in TRANSITIONS.items():
        grouped.setdefault((src, dst), []).append(ev)
    out = []
    for (src, dst), evs in sorted(grouped.items()):
        evs.sort()
        labels = [_label(e) for e in evs if e not in (Event.SEND_RST, Event.RECV_RST)]
        if Event.SEND_RST in evs or Event.RECV_RST in evs:
            labels.append("snd or rcv RST")
        if src is State.TIME_WAIT and dst is State.TIME_WAIT:
            labels = [lbl + " (restart 2MSL)" for lbl in labels]
        out.append((src, dst, ", ".join(labels)))
    return out


def diagram() -> Diagram:
    """Graphviz DOT and Mermaid stateDiagram-v2 text drawn from TRANSITIONS."""
    edges = _edges()
    dot = [
        "digraph tcp_states {",
        "  rankdir=TB;",
        '  node [shape=box, style=rounded, fontname="monospace"];',
    ]
    dot += [f"  {st.name};" for st in State]
    dot += [f'  {a.name} -> {b.name} [label="{lbl}"];' for a, b, lbl in edges]
    dot.append("}")
    mer = ["stateDiagram-v2", "    [*] --> CLOSED", "    [*] --> LISTEN"]
    mer += [f"    {a.name} --> {b.name} : {lbl}" for a, b, lbl in edges]
    return Diagram("\n".join(dot) + "\n", "\n".join(mer) + "\n")


DOC_BEGIN = "<!-- BEGIN GENERATED by docs/gen_state_diagram.py: do not edit -->"
DOC_END = "<!-- END GENERATED -->"


def docs_block() -> str:
    """The generated part of docs/state-machine.md: the diagram and both tables in full."""
    lines = ["```mermaid", diagram().mermaid.rstrip("\n"), "```", ""]
    lines += ["| state | event | next state |", "|---|---|---|"]
    for (src, ev), dst in sorted(TRANSITIONS.items()):
        lines.append(f"| {src.name} | {ev.name} | {dst.name} |")
    lines += ["", "Expected events that leave the state unchanged:", ""]
    lines += ["| state | events |", "|---|---|"]
    by_state: dict[State, list[Event]] = {}
    for src, ev in sorted(STAYS):
        by_state.setdefault(src, []).append(ev)
    for src, evs in by_state.items():
        lines.append(f"| {src.name} | {', '.join(e.name for e in evs)} |")
    return "\n".join(lines) + "\n"
