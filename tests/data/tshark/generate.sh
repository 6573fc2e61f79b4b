#!/bin/sh
# tshark's per-packet view of the captures that ship in the package (lab recordings and the
# demo capture), in the same columns as ../shared/corpus/zeek/tshark/*.tshark.tsv, so the
# tests compare against tshark without needing tshark. Made with TShark 4.0.17 (Debian 12):
#     sh tests/data/tshark/generate.sh
set -eu
cd "$(dirname "$0")/../../.."
FIELDS="frame.number frame.time_relative frame.len ip.src ip.dst ipv6.src ipv6.dst tcp.stream tcp.srcport tcp.dstport tcp.flags tcp.seq tcp.seq_raw tcp.ack tcp.ack_raw tcp.len tcp.window_size_value tcp.window_size tcp.window_size_scalefactor tcp.options.mss_val tcp.options.wscale.shift tcp.options.timestamp.tsval tcp.options.timestamp.tsecr tcp.analysis.duplicate_ack_num tcp.analysis.ack_rtt tcp.analysis.initial_rtt"
for f in src/tcpwhy/data/*.pcap src/tcpwhy/data/lab/*.pcap; do
  out="tests/data/tshark/$(basename "$f").tshark.tsv"
  args=""
  for x in $FIELDS; do args="$args -e $x"; done
  {
    printf '%s\ttcp.analysis\n' "$(echo $FIELDS | tr ' ' '\t')"
    # shellcheck disable=SC2086
    tshark -n -r "$f" -Y tcp -T fields -E separator=/t -E occurrence=f $args \
      -e tcp.analysis.retransmission -e tcp.analysis.fast_retransmission \
      -e tcp.analysis.spurious_retransmission -e tcp.analysis.out_of_order \
      -e tcp.analysis.lost_segment -e tcp.analysis.ack_lost_segment \
      -e tcp.analysis.duplicate_ack -e tcp.analysis.zero_window \
      -e tcp.analysis.zero_window_probe -e tcp.analysis.zero_window_probe_ack \
      -e tcp.analysis.window_full -e tcp.analysis.window_update \
      -e tcp.analysis.keep_alive -e tcp.analysis.keep_alive_ack \
      -e tcp.analysis.reused_ports 2>/dev/null |
    awk -F'\t' -v OFS='\t' -v n="$(echo $FIELDS | wc -w)" '
      BEGIN { split("retransmission fast_retransmission spurious_retransmission out_of_order lost_segment ack_lost_segment duplicate_ack zero_window zero_window_probe zero_window_probe_ack window_full window_update keep_alive keep_alive_ack reused_ports", names, " ") }
      { flags = ""; for (k = 1; k <= 15; k++) if ($(n + k) != "") flags = flags (flags == "" ? "" : ",") names[k];
        line = $1; for (k = 2; k <= n; k++) line = line OFS $k; print line, flags }'
  } > "$out"
  # the Info column, with higher protocols off so that it shows TCP's own text
  tshark -n -r "$f" -Y tcp --disable-protocol http --disable-protocol tls -T fields -e frame.number -e _ws.col.Info \
    2>/dev/null > "tests/data/tshark/$(basename "$f").info.tsv"
done
