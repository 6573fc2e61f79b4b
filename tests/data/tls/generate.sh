#!/bin/sh
# tshark's TLS record layer of the TLS lab recordings (the lab serves TLS on port 8080, so
# tshark is told to decode it as TLS). Made with TShark 4.0.17 (Debian 12):
#     sh tests/data/tls/generate.sh
set -eu
cd "$(dirname "$0")/../../.."
for f in src/tcpwhy/data/lab/*-tls.pcap src/tcpwhy/data/lab/tls-*.pcap; do
  tshark -n -r "$f" -d tcp.port==8080,tls -Y tls -T fields -E separator=/t -E occurrence=a \
    -E aggregator=, -e frame.number -e tls.record.content_type -e tls.record.length \
    -e tls.record.version -e tls.handshake.type -e tls.handshake.extensions_server_name \
    -e tls.handshake.extensions_alpn_str 2>/dev/null > "tests/data/tls/$(basename "$f").tls.tsv"
done
