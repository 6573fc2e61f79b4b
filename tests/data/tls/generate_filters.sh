#!/bin/sh
# The frames tshark 4.0 selects with each filter of filters.txt, on the TLS lab recordings
# (decoded as TLS on the lab's port 8080, as generate.sh does) and on a cleartext one (no
# decode-as: no TLS). One line per capture and filter: capture, filter, frame numbers.
# Made with TShark 4.0.17 (Debian 12):
#     sh tests/data/tls/generate_filters.sh
set -eu
cd "$(dirname "$0")/../../.."
out=tests/data/tls/filters.expected.tsv
: > "$out"
run() {  # capture, decode-as option ("" for none)
  while IFS= read -r flt; do
    # shellcheck disable=SC2086
    frames=$(tshark -n -r "$1" $2 -Y "$flt" -T fields -e frame.number 2>/dev/null | paste -sd, -)
    printf '%s\t%s\t%s\n' "$(basename "$1")" "$flt" "$frames" >> "$out"
  done < tests/data/tls/filters.txt
}
for f in src/tcpwhy/data/lab/*-tls.pcap src/tcpwhy/data/lab/tls-*.pcap tests/data/tls/clean-tls-v6-close-crossing.pcap tests/data/tls/clean-tls-resegmented.pcap tests/data/tls/clean-tls-first-header-cut.pcap; do
  run "$f" "-d tcp.port==8080,tls"
done
run src/tcpwhy/data/lab/clean.pcap ""
