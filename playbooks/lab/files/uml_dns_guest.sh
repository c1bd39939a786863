#!/bin/sh
# The command of the lab's UML guest "dns" (umlhost, seed 001), run by its init (scripts/uml-guest):
#   uml_dns_guest.sh NAME IPV4 IPV6
# Debian's dnsmasq answers NAME with IPV4 / IPV6 over UDP and TCP on eth0 (it logs each query on the console);
# port 22 answers with an SSH-style banner (what the host's SSH probe reads) and port 80 with a line of HTTP.
name=$1 v4=$2 v6=$3
socat TCP6-LISTEN:22,ipv6only=0,reuseaddr,fork SYSTEM:'echo SSH-2.0-nclab-dns-guest' &
socat TCP6-LISTEN:80,ipv6only=0,reuseaddr,fork SYSTEM:'printf "HTTP/1.0 204 No Content\r\n\r\n"' &
exec dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces --interface=eth0 \
  --user=root --pid-file --log-queries --log-facility=- --host-record="$name,$v4,$v6"
