# shellcheck shell=bash
# What the secmark tier's two guest roots share, sourced by selinux_guest/build.sh (the User-Mode-Linux guest) and
# qemu_guest/build.sh (the QEMU guest with Debian's stock kernel); recipe: test-hosts.md. Both scripts hash this
# file into their cache keys.
#   root_debootstrap OUT PACKAGES...   DIR=OUT.root and TMP=OUT.tmp made afresh (DIR removed when the build exits);
#                                      debootstrap bookworm minbase into DIR with what both guests need + PACKAGES
#   root_configure HOSTNAME DEVICE NIC hostname, fstab (DEVICE on /), systemd-networkd giving NIC (a networkd Name=
#                                      pattern) 192.0.2.2/24, sshd with root's new key (TMP/id_ed25519), no getty and
#                                      no timers, SELINUX=permissive, the test domains of nctest.cil in the store
#   root_label                         every file labelled with the guest's own setfiles (a chroot with /proc)
ROOT_SH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

root_debootstrap() {
  local out="$1" packages
  shift
  DIR="$out.root" TMP="$out.tmp"
  rm -rf "$DIR" "$TMP"
  mkdir -p "$TMP"
  trap 'umount "$DIR/proc" 2>/dev/null || true; rm -rf "$DIR"' EXIT
  packages=systemd,systemd-sysv,udev,dbus,iproute2,iptables,python3,selinux-basics,selinux-policy-default,policycoreutils
  packages+=,semodule-utils,auditd,kmod,procps,openssh-server,netcat-openbsd
  [ $# = 0 ] || packages+=",$(IFS=,; echo "$*")"
  debootstrap --variant=minbase --include="$packages" bookworm "$DIR" http://deb.debian.org/debian \
    >"$TMP/debootstrap.log" 2>&1 || { tail -20 "$TMP/debootstrap.log" >&2; exit 1; }
}

root_configure() {
  echo "$1" > "$DIR/etc/hostname"
  printf '%s / ext4 defaults 0 1\n' "$2" > "$DIR/etc/fstab"
  mkdir -p "$DIR/etc/systemd/network"
  printf '[Match]\nName=%s\n[Network]\nAddress=192.0.2.2/24\n' "$3" > "$DIR/etc/systemd/network/10-eth0.network"
  chroot "$DIR" systemctl enable systemd-networkd ssh >/dev/null 2>&1
  # nothing on the console but the kernel's and systemd's messages; no timer that would run while a test does
  chroot "$DIR" systemctl mask getty@tty1.service serial-getty@ttyS0.service systemd-networkd-wait-online.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer \
    >/dev/null 2>&1 || true
  sed -i 's/^SELINUX=.*/SELINUX=permissive/' "$DIR/etc/selinux/config"
  ssh-keygen -q -t ed25519 -N '' -f "$TMP/id_ed25519"
  mkdir -p "$DIR/root/.ssh" && chmod 700 "$DIR/root/.ssh"
  cp "$TMP/id_ed25519.pub" "$DIR/root/.ssh/authorized_keys"
  echo "UseDNS no" >> "$DIR/etc/ssh/sshd_config"
  cp "$ROOT_SH_DIR/nctest.cil" "$DIR/root/nctest.cil"
  chroot "$DIR" semodule -n -X 300 -i /root/nctest.cil
}

root_label() {
  mount -t proc proc "$DIR/proc"
  chroot "$DIR" setfiles -F -e /proc -e /sys -e /dev /etc/selinux/default/contexts/files/file_contexts /
  umount "$DIR/proc"
}
