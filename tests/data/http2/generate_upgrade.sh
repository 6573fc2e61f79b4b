#!/bin/sh
# The h2c-upgrade recordings: Apache httpd 2.4 (Debian's apache2-bin, mod_http2 with
# "Protocols h2c http/1.1", Timeout 3) answers an HTTP/1.1 "Upgrade: h2c" request with
# 101 and the response on stream 1; h2c_upgrade_client.py then sends stream 3:
#   h2c-upgrade-apache.pcap        at once after the first response
#   h2c-upgrade-apache-stale.pcap  after 35 s idle: the server sent GOAWAY and FIN at its
#                                  3 s idle timeout, then closed (lingering ends): RST
# As root:  sh tests/data/http2/generate_upgrade.sh
set -eu
cd "$(dirname "$0")"
here=$(pwd)
port=18933
d=$(mktemp -d)
mkdir "$d/www"
echo hello > "$d/www/a"
echo second > "$d/www/b"
chmod -R a+rX "$d"
m=/usr/lib/apache2/modules
cat > "$d/apache.conf" <<CONF
ServerRoot $d
ServerName 127.0.0.1
Listen 127.0.0.1:$port
LoadModule mpm_event_module $m/mod_mpm_event.so
LoadModule http2_module $m/mod_http2.so
LoadModule authz_core_module $m/mod_authz_core.so
User daemon
Group daemon
PidFile $d/apache.pid
ErrorLog $d/error.log
DocumentRoot $d/www
<Directory $d/www>
  Require all granted
</Directory>
Protocols h2c http/1.1
Timeout 3
CONF
/usr/sbin/apache2 -f "$d/apache.conf" -k start
sleep 1
record() {  # capture, idle seconds
  tcpdump -i lo --immediate-mode -U -w "$here/$1" "tcp port $port" 2>/dev/null &
  td=$!
  sleep 1
  python3 "$here/h2c_upgrade_client.py" "$port" "$2" || true
  sleep 1
  kill "$td"
  wait "$td" || true
}
record h2c-upgrade-apache.pcap 0
record h2c-upgrade-apache-stale.pcap 35
/usr/sbin/apache2 -f "$d/apache.conf" -k stop
sleep 1
rm -rf "$d"
