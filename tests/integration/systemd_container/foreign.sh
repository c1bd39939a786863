#!/bin/sh
# "Someone else's" persisted firewall in the container (not ours to touch): an iptables-restore unit
# and nftables.service whose /etc/nftables.conf starts with "flush ruleset". Run once inside it.
set -eu
cat > /etc/nct-foreign.rules <<'RULES'
*filter
:NCT-FOREIGN - [0:0]
-A INPUT -j NCT-FOREIGN
-A NCT-FOREIGN -s 198.51.100.7/32 -j DROP
COMMIT
RULES
cat > /etc/systemd/system/nct-foreign-iptables.service <<'UNIT'
[Unit]
Description=someone else's iptables rules
DefaultDependencies=no
Before=network-pre.target
Wants=network-pre.target
After=nftables.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/iptables-restore --noflush /etc/nct-foreign.rules
[Install]
WantedBy=multi-user.target
UNIT
cat > /etc/nftables.conf <<'NFT'
#!/usr/sbin/nft -f
flush ruleset
table inet nctforeign {
  chain input {
    type filter hook input priority 0; policy accept;
    ip saddr 198.51.100.8 drop
  }
}
NFT
systemctl daemon-reload
systemctl enable --now nct-foreign-iptables.service nftables.service
