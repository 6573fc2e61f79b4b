#!/bin/sh
# tshark 4.0's server name of each stream of the lab recordings: the ClientHello's
# tls.handshake.extensions_server_name (TLS recordings decoded as TLS on the lab's port
# 8080, as generate.sh does) and the http.host of every request. One line per frame:
# capture, tcp.stream, SNI, Host. Made with TShark 4.0.17 (Debian 12):
#     sh tests/data/tls/generate_names.sh
set -eu
cd "$(dirname "$0")/../../.."
out=tests/data/tls/server_names.tsv
: > "$out"
for f in src/tcpwhy/data/lab/*.pcap tests/data/tls/clean-tls-v6-close-crossing.pcap; do
  case "$f" in *tls*) da="-d tcp.port==8080,tls" ;; *) da="" ;; esac
  # shellcheck disable=SC2086
  tshark -n -r "$f" $da -Y "tls.handshake.type == 1 or http.request" -T fields \
    -e tcp.stream -e tls.handshake.extensions_server_name -e http.host 2>/dev/null |
    sed "s|^|$(basename "$f")\t|" >> "$out"
done
