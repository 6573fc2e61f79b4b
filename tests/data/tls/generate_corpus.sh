#!/bin/sh
# The frames tshark 4.0 selects with each filter of corpus_filters.txt on the Zeek corpus
# traces where tcpwhy finds TLS, restricted to those TLS streams ("(F) && tcp.stream in
# {S}"). One line per trace and filter: trace, streams, filter, frame numbers.
# Made with TShark 4.0.17 (Debian 12), the corpus at ../shared/corpus/zeek:
#     sh tests/data/tls/generate_corpus.sh [CORPUS_DIR]
set -eu
cd "$(dirname "$0")/../../.."
zeek=${1:-../shared/corpus/zeek}
out=tests/data/tls/corpus.expected.tsv
: > "$out"
for spec in ftp-gridftp:1 pppoe-over-qinq:0 tunnels-gtp-opt-header:0; do
  trace=${spec%%:*}
  streams=${spec#*:}
  while IFS= read -r flt; do
    frames=$(tshark -n -r "$zeek/$trace.pcap" -Y "($flt) && tcp.stream in {$streams}" \
      -T fields -e frame.number 2>/dev/null | paste -sd, -)
    printf '%s\t%s\t%s\t%s\n' "$trace" "$streams" "$flt" "$frames" >> "$out"
  done < tests/data/tls/corpus_filters.txt
done
