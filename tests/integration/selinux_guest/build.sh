#!/usr/bin/env bash
# Builds the enforcing-SELinux User-Mode-Linux guest of the secmark tier (recipe: test-hosts.md):
# a Debian 12 root from Debian packages (root.sh: debootstrap, selinux-policy-default, sshd, the two test
# domains of nctest.cil installed in the store, every file labelled with the guest's own setfiles), legacy
# iptables, the UML kernel's modules, a static vec0 (192.0.2.2/24), then mkfs.ext4 -d.
# Output: $OUT/root.img and $OUT/id_ed25519 (the cache directory, keyed by inputs).
#   build.sh OUT MODULES     (MODULES: the UML kernel's modules/VER directory, from scripts/uml-kernel)
set -euo pipefail
OUT="$1"
MODULES="$2"
KVER="$(basename "$MODULES")"
# shellcheck source=tests/integration/selinux_guest/root.sh
. "$(dirname "${BASH_SOURCE[0]}")/root.sh"
root_debootstrap "$OUT"
mkdir -p "$DIR/lib/modules"
cp -a "$MODULES" "$DIR/lib/modules/$KVER"
chroot "$DIR" depmod "$KVER"
# the vector driver's interface is vec0 (Debian 12's tuntap driver said eth0)
root_configure nctest-selinux /dev/ubda "vec0 eth0"
chroot "$DIR" update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
chroot "$DIR" update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null
root_label
mkfs.ext4 -q -d "$DIR" "$TMP/root.img" 2G
rm -rf "$OUT"
mv "$TMP" "$OUT"
