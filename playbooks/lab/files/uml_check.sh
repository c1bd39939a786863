#!/bin/sh
# The lab's checks of seed 001 on umlhost (uml_checks.yml); prints one line, the outcome (never fails).
#   uml_check.sh dig NETNS SERVER NAME [DIG-ARGS]  dig @SERVER NAME in NETNS (- here): answered ADDRESS | timeout | no-answer
#   uml_check.sh tcp NETNS HOST PORT               a TCP connection from NETNS (- here): connected | refused | timeout
#   uml_check.sh guest GUEST CHECK...              CHECK inside the UML guest GUEST: typed on its console
#                                                  ($NCLAB_UML_DIR/GUEST; bash $NCLAB_UML_GUEST send), its answer printed
#   uml_check.sh forge CIDR CHECK...               (inside a guest) CHECK with the address CIDR added to eth0 for it
#   uml_check.sh spoof GUEST 4|6 CHECK...          guest GUEST CHECK, and the packet counter of the DROP rules of
#                                                  GUEST's anti-spoofing (read from the kernel of this host, iptables
#                                                  or nftables): dropped+counted when CHECK timed out and it rose
in_ns() { ns=$1; shift; if [ "$ns" = - ]; then "$@"; else ip netns exec "$ns" "$@"; fi; }
case "$1" in
  dig)
    ns=$2 server=$3 name=$4; shift 4
    out=$(in_ns "$ns" dig +time=2 +tries=1 +short "@$server" "$name" "$@" 2>&1); rc=$?
    if [ "$rc" = 9 ] || printf '%s' "$out" | grep -q 'timed out'; then echo timeout
    elif [ "$rc" = 0 ] && [ -n "$out" ]; then echo "answered $(printf '%s\n' "$out" | head -n 1)"
    else echo "no-answer ($rc: $(printf '%s' "$out" | tr '\n' ' '))"; fi ;;
  tcp)
    out=$(in_ns "$2" socat -T2 /dev/null "TCP:$3:$4,connect-timeout=2" 2>&1); rc=$?
    if [ "$rc" = 0 ]; then echo connected
    elif printf '%s' "$out" | grep -q 'refused'; then echo refused
    elif printf '%s' "$out" | grep -qi 'timed out'; then echo timeout
    else echo "error: $out"; fi ;;
  guest)
    guest=$2; shift 2
    dir=${NCLAB_UML_DIR:-/run/nclab/umlhost}/$guest
    id="c$$"
    bash "${NCLAB_UML_GUEST:-scripts/uml-guest}" send "$dir" "$id $*" >/dev/null 2>&1 ||
      { echo "no guest $guest ($dir)"; exit 0; }
    for _ in $(seq 300); do
      out=$(sed -n "s/^RESULT $id //p" "$dir/console.log" | tr -d '\r' | tail -n 1)
      [ -n "$out" ] && { echo "$out"; exit 0; }
      sleep 0.1
    done
    echo "no answer from guest $guest" ;;
  forge)
    cidr=$2; shift 2
    case "$cidr" in *:*) ip -6 addr add "$cidr" dev eth0 nodad ;; *) ip addr add "$cidr" dev eth0 ;; esac
    sh "$0" "$@"
    ip addr del "$cidr" dev eth0 ;;
  spoof)
    guest=$2 family=$3; shift 3
    count() {  # packets dropped by GUEST's anti-spoofing of FAMILY, on either backend
      { if [ "$family" = 4 ]; then iptables-save -c -t filter; else ip6tables-save -c -t filter; fi 2>/dev/null |
          grep -E "^\[[0-9]+:[0-9]+\] -A NC-[^ ]*-g-$guest-[0-9a-f]{8} .*-j DROP\$" | grep -v ' -p ' |
          sed 's/^\[\([0-9]*\):.*/\1/'
        nft list table bridge netconfine 2>/dev/null |
          awk -v c="spoof$family-$guest" '$1 == "chain" { mine = ($2 ~ ("[.]" c "$")) } mine && / drop/ && /counter packets/ {
            for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'
      } | awk '{ s += $1 } END { print s + 0 }'
    }
    a=$(count)
    out=$(sh "$0" guest "$guest" "$@")
    b=$(count)
    if [ "$out" = timeout ] && [ "$b" -gt "$a" ]; then echo dropped+counted
    else echo "$out (DROP counter $a -> $b)"; fi ;;
  *) echo "usage: $0 dig|tcp|guest|forge|spoof ..."; exit 2 ;;
esac
exit 0
