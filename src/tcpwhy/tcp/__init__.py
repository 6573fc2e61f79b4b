"""Connections, the state machine of both endpoints, and Wireshark's analysis flags.

`ANALYSIS_FLAGS` lives here, not in `analysis` (which loads compiled code), so that
the display filters can name the fields without loading it.
"""

ANALYSIS_FLAGS = (
    "retransmission",
    "fast_retransmission",
    "spurious_retransmission",
    "out_of_order",
    "lost_segment",
    "ack_lost_segment",
    "duplicate_ack",
    "zero_window",
    "zero_window_probe",
    "zero_window_probe_ack",
    "window_full",
    "window_update",
    "keep_alive",
    "keep_alive_ack",
    "reused_ports",
)
"""Wireshark's `tcp.analysis.*` flag names, in the order of their bits in `Analysis.bits`."""
