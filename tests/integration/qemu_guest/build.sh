#!/usr/bin/env bash
# Builds the enforcing-SELinux QEMU guest of the secmark tier's nftables form (recipe: test-hosts.md, "An emulated
# QEMU guest with Debian's stock kernel"): a Debian 12 root from Debian packages (../selinux_guest/root.sh:
# debootstrap, selinux-policy-default, sshd, the test domains of nctest.cil installed in the store, every file
# labelled with the guest's own setfiles) with linux-image-amd64 and nftables, a static address 192.0.2.2/24 on the
# virtio NIC, then mkfs.ext4 -d. No loop device, no mount but the chroot's /proc.
# Output: $OUT/base.raw, $OUT/vmlinuz, $OUT/initrd.img, $OUT/id_ed25519 (the cache directory, keyed by inputs).
#   build.sh OUT
set -euo pipefail
OUT="$1"
# shellcheck source=tests/integration/selinux_guest/root.sh
. "$(dirname "${BASH_SOURCE[0]}")/../selinux_guest/root.sh"
root_debootstrap "$OUT" linux-image-amd64 initramfs-tools nftables python3-selinux
root_configure nctest-qemu /dev/vda "en* eth*"
root_label
kernel=("$DIR"/boot/vmlinuz-*) initrd=("$DIR"/boot/initrd.img-*)
if [ "${#kernel[@]}" != 1 ] || [ ! -f "${kernel[0]}" ] || [ ! -f "${initrd[0]}" ]; then
  echo "no single kernel and initrd in $DIR/boot" >&2
  exit 1
fi
cp "${kernel[0]}" "$TMP/vmlinuz"
cp "${initrd[0]}" "$TMP/initrd.img"
mkfs.ext4 -q -d "$DIR" "$TMP/base.raw" 4G
rm -rf "$OUT"
mv "$TMP" "$OUT"
