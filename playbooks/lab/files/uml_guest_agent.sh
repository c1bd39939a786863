#!/bin/sh
# The command of the lab's UML guest "www" (umlhost, seed 001), run by its init (scripts/uml-guest).
# It stands for a compromised guest: on its console (scripts/uml-guest send) it takes lines "ID CHECK ARGS..."
# and runs uml_check.sh CHECK ARGS... here, in the guest (dig, tcp, forge: a source address not its own),
# answering "RESULT ID OUTCOME" on the console. Port 80 answers (its inbound service).
here=$(cd "$(dirname "$0")" && pwd)
# the attacker keeps its ARP clean (the bridge's L2 guard drops ARP from a forged address), so that the
# forged IP packets themselves reach the bridge
sysctl -q -w net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.eth0.arp_announce=2
socat TCP6-LISTEN:80,ipv6only=0,reuseaddr,fork SYSTEM:'printf "HTTP/1.0 204 No Content\r\n\r\n"' &
echo "RESULT agent ready"
while read -r id check; do
  [ -n "$id" ] || continue
  # shellcheck disable=SC2086  # the check's words, split on purpose
  echo "RESULT $id $(sh "$here/uml_check.sh" $check 2>&1 | tail -n 1)"
done
