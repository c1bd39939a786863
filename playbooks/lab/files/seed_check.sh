#!/bin/sh
# The seeds' own commands on crueller (and a look at seed 004's daemon on nsdaemonhost); prints one word, the
# outcome (never fails).
#   seed_check.sh rsync USER -4|-6    rsync --port=273 localhost::attic/stuff.txt as USER: got-stuff.txt | refused | ...
#   seed_check.sh sg USER GROUP HOST  sg GROUP -c 'ping HOST' as USER: network | no-network
#   seed_check.sh logged HOST [kmsg]  does root's ping to HOST raise the root-egress: LOG counter: logged | not-logged;
#                                     with kmsg (net.netfilter.nf_log_all_netns=1) also a kernel log line: logged+kmsg
#   seed_check.sh daemon NETNS USER   every process in NETNS runs as USER, with no_new_privs, and its /tmp is not
#                                     this machine's: confined | what differs
case "$1" in
  rsync)
    d=$(mktemp -d); chmod 777 "$d"
    runuser -u "$2" -- rsync "$3" --port=273 --timeout=10 localhost::attic/stuff.txt "$d/" >"$d/log" 2>&1
    if grep -q "sensitive stuff" "$d/stuff.txt" 2>/dev/null; then echo got-stuff.txt
    elif grep -q "Connection refused" "$d/log"; then echo refused
    else tr '\n' ' ' <"$d/log"; echo; fi
    rm -rf "$d" ;;
  sg)
    if runuser -u "$2" -- sg "$3" -c "ping -n -c1 -W2 $4" >/dev/null 2>&1; then echo network; else echo no-network; fi ;;
  logged)
    count() {
      { nft list table inet netconfine 2>/dev/null; iptables-save -c 2>/dev/null; ip6tables-save -c 2>/dev/null; } |
        grep 'root-egress' | sed -n 's/.*counter packets \([0-9]*\).*/\1/p; s/^\[\([0-9]*\):.*/\1/p' |
        awk '{s += $1} END {print s + 0}'
    }
    # the rule logs at most 10/min (burst 5): after a busy converge its bucket may be empty, and one
    # token comes back every 6 s, so wait for one first; then the LOG rule's counter must rise
    sleep 7
    lines() { dmesg 2>/dev/null | grep -c "root-egress: .* DST=$1 "; }
    k=$(lines "$2")
    a=$(count); ping -n -c1 -W2 "$2" >/dev/null 2>&1; b=$(count)
    if [ "$b" -le "$a" ]; then echo "not-logged ($a -> $b)"
    elif [ "${3:-}" != kmsg ]; then echo logged
    else
      for _ in 1 2 3 4 5 6 7 8 9 10; do [ "$(lines "$2")" -gt "$k" ] && break; sleep 0.2; done
      if [ "$(lines "$2")" -gt "$k" ]; then echo logged+kmsg; else echo "logged (counter), no kernel log line"; fi
    fi ;;
  daemon)
    pids=$(ip netns pids "$2")
    [ -n "$pids" ] || { echo no-process; exit 0; }
    uid=$(id -u "$3") || { echo "no-user $3"; exit 0; }
    out=confined
    for p in $pids; do
      [ "$(awk '/^Uid:/ {print $2}' "/proc/$p/status")" = "$uid" ] || out="pid $p is not $3"
      [ "$(awk '/^NoNewPrivs:/ {print $2}' "/proc/$p/status")" = 1 ] || out="pid $p may gain privileges"
      # /proc/PID/root/tmp is the process's /tmp, seen through its own mount namespace
      [ "$(stat -c %d "/proc/$p/root/tmp")" != "$(stat -c %d /tmp)" ] || out="pid $p shares this machine's /tmp"
    done
    echo "$out" ;;
  *) echo "usage: $0 rsync|sg|logged|daemon ..."; exit 2 ;;
esac
exit 0
