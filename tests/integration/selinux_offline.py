"""Debian's reference policy for offline compiles: the installed store's modules as CIL, cached under .build/.

``reference_cil()`` returns the directory of ``*.cil`` files (every enabled module of
/var/lib/selinux/default, bzip2-decompressed), keyed by the package version and the store's
commit number so that a policy update rebuilds it. ``compile_cil(paths)`` runs
``secilc`` over them plus ``paths`` and returns (rc, output). ``store_copy(dest)`` copies
/etc/selinux and /var/lib/selinux under ``dest`` for ``semodule -p dest`` (a private store).
"""

from __future__ import annotations

import bz2
import hashlib
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STORE = "/var/lib/selinux/default/active/modules"


def _need():
    missing = [tool for tool in ("secilc", "semodule") if not shutil.which(tool)]
    if missing or not os.path.isdir(STORE):
        raise RuntimeError("the SELinux offline tier needs secilc, semodule and Debian's selinux-policy-default "
                           "(apt-get install secilc semodule-utils policycoreutils selinux-policy-default); "
                           "missing: %s" % (", ".join(missing) or STORE))


def reference_cil():
    _need()
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "selinux-policy-default"],
                             capture_output=True, text=True, check=False).stdout
    with open(os.path.join(os.path.dirname(STORE), "commit_num"), "rb") as handle:
        commit = handle.read()
    disabled_dir = os.path.join(STORE, "disabled")
    disabled = sorted(os.listdir(disabled_dir)) if os.path.isdir(disabled_dir) else []
    key = hashlib.sha256(repr((version, commit, disabled)).encode()).hexdigest()[:16]
    out = os.path.join(ROOT, ".build", "refpolicy-cil", key)
    if os.path.isdir(out):
        return out
    tmp = out + ".tmp%d" % os.getpid()
    os.makedirs(tmp)
    for priority in sorted(os.listdir(STORE)):
        if not priority.isdigit():
            continue
        for name in sorted(os.listdir(os.path.join(STORE, priority))):
            cil = os.path.join(STORE, priority, name, "cil")
            if name in disabled or not os.path.exists(cil):
                continue
            with open(cil, "rb") as src, open(os.path.join(tmp, "%s_%s.cil" % (priority, name)), "wb") as dst:
                dst.write(bz2.decompress(src.read()))
    os.rename(tmp, out)
    return out


def compile_cil(paths):
    """secilc over the reference policy plus ``paths``: (returncode, stdout+stderr)."""
    ref = reference_cil()
    files = [os.path.join(ref, f) for f in sorted(os.listdir(ref))] + list(paths)
    proc = subprocess.run(["secilc", "-M", "true", "-o", "/dev/null", "-f", "/dev/null"] + files,
                          capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def store_copy(dest):
    _need()
    for src in ("/etc/selinux", "/var/lib/selinux"):
        target = os.path.join(dest, src.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copytree(src, target, symlinks=True)
    return dest
