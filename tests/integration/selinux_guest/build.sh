#!/usr/bin/env bash
# Builds the enforcing-SELinux User-Mode-Linux guest of the secmark tier (recipe: test-hosts.md):
# a Debian 12 root from Debian packages (debootstrap, selinux-policy-default, sshd, legacy iptables),
# the UML kernel's modules, root's SSH key, a static vec0 (192.0.2.2/24), the two test domains of
# nctest.cil installed in the store, every file labelled with the guest's own setfiles, then
# mkfs.ext4 -d. Output: $OUT/root.img and $OUT/id_ed25519 (the cache directory, keyed by inputs).
#   build.sh OUT MODULES     (MODULES: the UML kernel's modules/VER directory, from scripts/uml-kernel)
set -euo pipefail
OUT="$1"
MODULES="$2"
KVER="$(basename "$MODULES")"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$OUT.root"
rm -rf "$DIR" "$OUT.tmp"
mkdir -p "$OUT.tmp"
cleanup() { umount "$DIR/proc" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,udev,dbus,iproute2,iptables,python3,selinux-basics,selinux-policy-default,policycoreutils,semodule-utils,auditd,kmod,procps,openssh-server,netcat-openbsd \
  bookworm "$DIR" http://deb.debian.org/debian >"$OUT.tmp/debootstrap.log" 2>&1 \
  || { tail -20 "$OUT.tmp/debootstrap.log" >&2; exit 1; }
mkdir -p "$DIR/lib/modules"
cp -a "$MODULES" "$DIR/lib/modules/$KVER"
chroot "$DIR" depmod "$KVER"
echo nctest-selinux > "$DIR/etc/hostname"
printf '/dev/ubda / ext4 defaults 0 1\n' > "$DIR/etc/fstab"
mkdir -p "$DIR/etc/systemd/network"
# the vector driver's interface is vec0 (Debian 12's tuntap driver said eth0)
printf '[Match]\nName=vec0 eth0\n[Network]\nAddress=192.0.2.2/24\n' > "$DIR/etc/systemd/network/10-eth0.network"
chroot "$DIR" systemctl enable systemd-networkd ssh >/dev/null 2>&1
chroot "$DIR" systemctl mask getty@tty1.service serial-getty@ttyS0.service >/dev/null 2>&1 || true
chroot "$DIR" update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
chroot "$DIR" update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null
sed -i 's/^SELINUX=.*/SELINUX=permissive/' "$DIR/etc/selinux/config"
ssh-keygen -q -t ed25519 -N '' -f "$OUT.tmp/id_ed25519"
mkdir -p "$DIR/root/.ssh" && chmod 700 "$DIR/root/.ssh"
cp "$OUT.tmp/id_ed25519.pub" "$DIR/root/.ssh/authorized_keys"
echo "UseDNS no" >> "$DIR/etc/ssh/sshd_config"
cp "$HERE/nctest.cil" "$DIR/root/nctest.cil"
chroot "$DIR" semodule -n -X 300 -i /root/nctest.cil
mount -t proc proc "$DIR/proc"
chroot "$DIR" setfiles -F -e /proc -e /sys -e /dev /etc/selinux/default/contexts/files/file_contexts /
umount "$DIR/proc"
mkfs.ext4 -q -d "$DIR" "$OUT.tmp/root.img" 2G
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
