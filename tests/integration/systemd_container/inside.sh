#!/usr/bin/env bash
# Second half of boot.sh, PID 1 of the new pid namespace until it execs systemd in the chroot.
set -euo pipefail
LOWER="$1"; STATE="$2"; CHECKOUT="$3"
# the cached root stays as built: this container's changes go to STATE/upper and survive its reboots
mkdir -p "$STATE/upper" "$STATE/work" "$STATE/merged"
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$STATE/upper,workdir=$STATE/work" "$STATE/merged"
R="$STATE/merged"
mount -t proc proc "$R/proc"
mount -t sysfs -o ro sysfs "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount -t tmpfs -o mode=755 tmpfs "$R/dev"
for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r n ma mi <<<"$d"; mknod -m 666 "$R/dev/$n" c "$ma" "$mi"
done
mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/net"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
touch "$R/dev/console" && mount --bind /dev/null "$R/dev/console"
# the checkout, read-only, for the tests' files
mount --bind "$CHECKOUT" "$R/checkout" && mount -o remount,bind,ro "$R/checkout"
exec chroot "$R" /usr/bin/env container=unshare /lib/systemd/systemd --log-target=console
