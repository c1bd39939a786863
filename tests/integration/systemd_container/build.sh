#!/usr/bin/env bash
# Builds the root of the real-systemd tier (recipe: test-hosts.md, "A real systemd"): a Debian 12
# root from Debian packages, booted later with systemd as PID 1 (boot.sh). Output: $OUT/root (the
# cache directory, keyed by a hash of this script). Test users: nctd (the daemon), nctx.
#   build.sh OUT
set -euo pipefail
OUT="$1"
DIR="$OUT.tmp"
rm -rf "$DIR"
mkdir -p "$(dirname "$OUT")"
trap 'rm -rf "$DIR"' EXIT
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,iproute2,iptables,nftables,python3,procps,kmod,netcat-openbsd \
  bookworm "$DIR" http://deb.debian.org/debian >"$OUT.log" 2>&1 \
  || { tail -20 "$OUT.log" >&2; exit 1; }
echo nctest-systemd > "$DIR/etc/hostname"
# nothing of the container may touch consoles, udev or time; the journal stays in memory
chroot "$DIR" systemctl mask console-getty.service getty@tty1.service systemd-udevd.service \
  systemd-timesyncd.service systemd-networkd.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer fstrim.timer systemd-firstboot.service >/dev/null 2>&1 || true
mkdir -p "$DIR/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$DIR/etc/systemd/journald.conf.d/nct.conf"
chroot "$DIR" useradd --system --create-home --home-dir /var/lib/nctd --shell /usr/sbin/nologin nctd
chroot "$DIR" useradd --system --no-create-home --shell /usr/sbin/nologin nctx
: > "$DIR/etc/machine-id"
mkdir -p "$DIR/checkout" "$DIR/venv"
mv "$DIR" "$OUT"
trap - EXIT
