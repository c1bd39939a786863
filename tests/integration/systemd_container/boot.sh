#!/usr/bin/env bash
# Boots ROOT with systemd as PID 1 in new pid/mount/uts/ipc/net/cgroup namespaces (test-hosts.md).
# Runs in the foreground until that systemd exits; called by systemd_container.py as
#   boot.sh CGROUP ROOT STATE CHECKOUT
# after which the caller finds systemd as the child of this script's unshare.
set -euo pipefail
CG="$1"; ROOT="$2"; STATE="$3"; CHECKOUT="$4"
echo $$ > "$CG/cgroup.procs"
exec unshare --pid --fork --mount --uts --ipc --net --cgroup --propagation private \
  /bin/bash "$(dirname "$0")/inside.sh" "$ROOT" "$STATE" "$CHECKOUT"
