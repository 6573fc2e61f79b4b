"""Field names in display filters against Wireshark's own list (data/wireshark-fields.txt,
from ``tshark -G fields``): tcpwhy's fields are Wireshark's, and a filter naming a field of
Wireshark's that tcpwhy does not compute says so, where tshark's message for a name that is
no field at all would send the user looking for a typing error."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tcpwhy.filter import FilterError, compile_filter
from tcpwhy.filter.compiler import wireshark_fields
from tcpwhy.filter.fields import FIELDS
from tests.gates import need

HERE = Path(__file__).resolve().parent
SHIPPED = HERE.parent / "src" / "tcpwhy" / "data" / "wireshark-fields.txt"
LACKS = "is a Wireshark field that tcpwhy does not compute"

ALIASES = {"tcp.flags.ns": "Wireshark 3's name of tcp.flags.ae, which tshark 4.0 no longer takes"}
"""tcpwhy's fields that are not in tshark 4.0's list, with the reason."""


def test_the_list_is_the_installed_tsharks() -> None:
    """The list is the installed tshark's; from another point release of the same series
    (apt may bring one), every name listed is still tshark's."""
    need(shutil.which("tshark") is not None, "tshark not installed")
    sys.path.insert(0, str(HERE / "data" / "filters"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    version = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout
    first = version.splitlines()[0].rstrip(".")
    head, *shipped = SHIPPED.read_text().splitlines()
    series = re.search(r"\(Wireshark\) (\d+\.\d+)\.", first)
    need(series is not None and f"(Wireshark) {series[1]}." in head, f"not tshark 4.0: {first}")
    installed = generate.wireshark_fields(first).splitlines()[1:]
    if first in head:
        assert installed == shipped
    else:
        assert set(shipped) <= set(installed)
    assert len(wireshark_fields()) > 1500


def test_every_field_of_tcpwhy_is_wiresharks() -> None:
    names = wireshark_fields()
    assert sorted(n for n in FIELDS if n not in names) == sorted(ALIASES)


@pytest.mark.parametrize("form", ["{}", "{} > 1", "{} contains 41", '{} matches "x"'])
def test_a_wireshark_field_tcpwhy_lacks_is_named_as_such(form: str) -> None:
    lacking = sorted(wireshark_fields() - set(FIELDS))
    assert len(lacking) > 1500 and "tcp.analysis.bytes_in_flight" in lacking
    for name in lacking:
        with pytest.raises(FilterError) as exc:
            compile_filter(form.format(name))
        assert f"{name} {LACKS}" in str(exc.value), form.format(name)
        assert exc.value.exit_status == 2


def test_a_name_no_one_has_keeps_tsharks_message() -> None:
    for text, message in (
        (
            "tcp.bogus > 1",
            'Left side of ">" expression must be a field or function, not tcp.bogus.',
        ),
        ("tcp.bogus", "tcp.bogus is neither a field nor a protocol name."),
    ):
        with pytest.raises(FilterError) as exc:
            compile_filter(text)
        assert message in str(exc.value) and LACKS not in str(exc.value)


def test_next_seq_counts_one_for_a_segment_with_syn_and_fin(tcpdump_corpus: Path) -> None:
    """tshark 4.0 gives a segment with both SYN and FIN one sequence number, not RFC 9293's
    two (tcpdump's capture of a segment with the eight lowest flags set: tcp.nxtseq 1)."""
    from tcpwhy.capture import read_table
    from tcpwhy.decode.table import CaptureStats
    from tcpwhy.filter import FilterContext

    stats = CaptureStats()
    table = read_table(str(tcpdump_corpus / "tcp_eight_lowest_weight_flags_set.pcap"), stats)
    ctx = FilterContext(table, first_ts_ns=stats.first_ts_ns)
    for text, frames in (("tcp.nxtseq == 1", [1]), ("tcp.nxtseq == 2", [])):
        assert table["frame"][compile_filter(text).mask(table, ctx)].tolist() == frames
    if shutil.which("tshark"):
        cmd = ["tshark", "-n", "-r", str(tcpdump_corpus / "tcp_eight_lowest_weight_flags_set.pcap")]
        out = subprocess.run(
            [*cmd, "-T", "fields", "-e", "tcp.nxtseq"], capture_output=True, text=True
        ).stdout
        assert out.split() == ["1"]
