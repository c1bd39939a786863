#!/usr/bin/env bash
# Builds the enforcing-SELinux QEMU guest of the secmark tier's nftables form (recipe: test-hosts.md, "An emulated
# QEMU guest with Debian's stock kernel"): a Debian 12 root from Debian packages (debootstrap with linux-image-amd64,
# selinux-policy-default, sshd, nftables), root's SSH key, a static address 192.0.2.2/24 on the virtio NIC, the two
# test domains of ../selinux_guest/nctest.cil installed in the store, every file labelled with the guest's own
# setfiles, then mkfs.ext4 -d. No loop device, no mount but the chroot's /proc.
# Output: $OUT/base.raw, $OUT/vmlinuz, $OUT/initrd.img, $OUT/id_ed25519 (the cache directory, keyed by inputs).
#   build.sh OUT
set -euo pipefail
OUT="$1"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$OUT.root"
rm -rf "$DIR" "$OUT.tmp"
mkdir -p "$OUT.tmp"
cleanup() { umount "$DIR/proc" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
debootstrap --variant=minbase \
  --include=linux-image-amd64,initramfs-tools,systemd,systemd-sysv,udev,dbus,iproute2,iptables,nftables,python3,python3-selinux,selinux-basics,selinux-policy-default,policycoreutils,semodule-utils,auditd,kmod,procps,openssh-server,netcat-openbsd \
  bookworm "$DIR" http://deb.debian.org/debian >"$OUT.tmp/debootstrap.log" 2>&1 \
  || { tail -20 "$OUT.tmp/debootstrap.log" >&2; exit 1; }
echo nctest-qemu > "$DIR/etc/hostname"
printf '/dev/vda / ext4 defaults 0 1\n' > "$DIR/etc/fstab"
mkdir -p "$DIR/etc/systemd/network"
printf '[Match]\nName=en* eth*\n[Network]\nAddress=192.0.2.2/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
  > "$DIR/etc/systemd/network/10-nic.network"
chroot "$DIR" systemctl enable systemd-networkd ssh >/dev/null 2>&1
# nothing on the serial console but the kernel's and systemd's messages; no timers that would run while a test does
chroot "$DIR" systemctl mask getty@tty1.service serial-getty@ttyS0.service systemd-networkd-wait-online.service \
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer >/dev/null 2>&1 || true
sed -i 's/^SELINUX=.*/SELINUX=permissive/' "$DIR/etc/selinux/config"
ssh-keygen -q -t ed25519 -N '' -f "$OUT.tmp/id_ed25519"
mkdir -p "$DIR/root/.ssh" && chmod 700 "$DIR/root/.ssh"
cp "$OUT.tmp/id_ed25519.pub" "$DIR/root/.ssh/authorized_keys"
echo "UseDNS no" >> "$DIR/etc/ssh/sshd_config"
cp "$HERE/../selinux_guest/nctest.cil" "$DIR/root/nctest.cil"
chroot "$DIR" semodule -n -X 300 -i /root/nctest.cil
mount -t proc proc "$DIR/proc"
chroot "$DIR" setfiles -F -e /proc -e /sys -e /dev /etc/selinux/default/contexts/files/file_contexts /
umount "$DIR/proc"
kernel=("$DIR"/boot/vmlinuz-*) initrd=("$DIR"/boot/initrd.img-*)
[ "${#kernel[@]}" = 1 ] && [ -f "${kernel[0]}" ] && [ -f "${initrd[0]}" ] || { echo "no single kernel/initrd in $DIR/boot" >&2; exit 1; }
cp "${kernel[0]}" "$OUT.tmp/vmlinuz"
cp "${initrd[0]}" "$OUT.tmp/initrd.img"
mkfs.ext4 -q -d "$DIR" "$OUT.tmp/base.raw" 4G
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
