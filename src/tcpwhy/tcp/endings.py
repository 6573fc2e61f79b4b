"""How a connection ended: the stable codes, in one place for `conns` and `analyze`.

`tcpwhy.tcp.connections` words each record's ending (`end_words`) and gives its code
(`end_code`); `tcpwhy.diagnose` counts connections by the coarser `ENDING_SUMMARY`. Both
name their codes from `ENDINGS`. Kept free of imports: the diagnosis model and the
reports read it.
"""

from __future__ import annotations

ENDINGS: dict[str, str] = {
    "refused": "refused (RST to SYN)",
    "no_answer": "no answer to SYN",
    "rejected_by_icmp": "an ICMP error answered the SYN",
    "reset_by_originator": "reset by originator (after any FINs named)",
    "reset_by_responder": "reset by responder (after any FINs named)",
    "reset": "reset (by either side; written by schema 1.1 documents before analyze said which)",
    "fin_both": "closed by a FIN from each side",
    "half_closed": "half-closed: one side's FIN, none from the other",
    "open_at_end": "still open at end of capture",
    "evicted": "evicted while still open (too many active connections)",
    "idle": "idle for a while, no close seen",
    "inactivity_timeout": "no close seen before Zeek's inactivity timeout",
    "no_close": "no close seen",
    "other": "words without a code (not written by tcpwhy's own builder)",
}
"""Stable codes of how a connection ended, with what each means: `end_code` gives the code of
`end_words`' words, `tcpwhy.diagnose` the codes of its coarser counts. Scripts match codes;
the words are for people and may change."""

ENDING_SUMMARY: tuple[tuple[str, str], ...] = (
    ("refused", "refused"),
    ("rejected_by_icmp", "rejected by ICMP"),
    ("no_answer", ENDINGS["no_answer"]),
    ("reset_by_originator", "reset by client"),
    ("reset_by_responder", "reset by server"),
    ("fin_both", "closed (FIN both ways)"),
    ("half_closed", "half-closed (one FIN)"),
    ("open_at_end", "open at capture end"),
)
"""The coarse endings `analyze` counts, one per connection, in the order reports list them:
each an `ENDINGS` code and the words a report shows for it (the client is the side that
called connect(), the originator of the codes; where a count is the code's whole meaning,
its words are the code's own)."""
