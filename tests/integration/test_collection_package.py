"""The collection as users and execution environments get it (issue 25).

1. ``ansible-galaxy collection build`` leaves development-only files out (galaxy.yml build_ignore);
   the tarball installs into a user's own project directory and a playbook there imports one of its
   roles, against a network namespace, with nothing of the checkout on Ansible's path.
2. ``ansible-builder create`` with a minimal execution-environment definition that lists the
   collection from that tarball writes a build context; the context's own introspection script (what
   the image build runs once the collection is installed) reports the collection's requirements.txt
   and bindep.txt. Building the image itself needs a container registry this machine cannot reach.
3. ``bindep`` finds nothing of bindep.txt missing on this (Debian) machine after scripts/bootstrap.

About 30-60 s (the build, one install, one playbook, ansible-builder create).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from nchelpers import run

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEV_ONLY = (".venv/", ".build/", ".git/", ".ci/", "bench/results/", "tests/output/", ".pytest_cache/",
            ".hypothesis/", "__pycache__/", "ansible.cfg", "pytest.ini", "requirements/dev.txt")


def tool(name):
    path = BIN / name
    assert path.exists(), f"{name} is not installed in the venv (requirements/dev.txt, scripts/bootstrap)"
    return str(path)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    got = subprocess.run([tool("ansible-galaxy"), "collection", "build", "--output-path", str(out), str(ROOT)],
                         capture_output=True, text=True, check=False, cwd=out)
    assert got.returncode == 0, got.stdout + got.stderr
    (built,) = out.glob("paranoid-netconfine-*.tar.gz")
    return built


def clean_env(home):
    """The environment of a user's own project: no ansible.cfg of the checkout, nothing in ~/.ansible."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_HOME=str(home / ".ansible"), ANSIBLE_NOCOLOR="1", PATH=f"{BIN}:{env['PATH']}")
    return env


def test_the_tarball_leaves_development_files_out_and_has_the_declarations(tarball):
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    leaked = [n for n in names for d in DEV_ONLY if n == d.rstrip("/") or n.startswith(d) or f"/{d}" in f"/{n}"]
    assert leaked == [], leaked
    for wanted in ("MANIFEST.json", "meta/runtime.yml", "meta/execution-environment.yml", "requirements.txt",
                   "bindep.txt", "plugins/modules/owner_rule.py", "roles/tunnel_guard/tasks/main.yml"):
        assert wanted in names, wanted


def test_the_tarball_installs_into_a_project_and_a_playbook_imports_its_role(tarball, tmp_path, netns_host):
    project = tmp_path / "project"
    project.mkdir()
    env = clean_env(tmp_path)
    got = subprocess.run([tool("ansible-galaxy"), "collection", "install", "-p", "collections", str(tarball)],
                         cwd=project, env=env, capture_output=True, text=True, check=False)
    assert got.returncode == 0, got.stdout + got.stderr
    installed = project / "collections" / "ansible_collections" / "paranoid" / "netconfine"
    assert (installed / "MANIFEST.json").is_file() and not installed.is_symlink()
    (project / "inventory.yml").write_text(textwrap.dedent(f"""\
        all:
          hosts:
            crueller:
              ansible_connection: paranoid.netconfine.netns
              ansible_netns: {netns_host}
              ansible_python_interpreter: /usr/bin/python3
        """))
    (project / "site.yml").write_text(textwrap.dedent("""\
        - name: Guard the tunnel
          hosts: crueller
          gather_facts: false
          tasks:
            - name: Only root may use the stunnel listener on 992
              ansible.builtin.import_role:
                name: paranoid.netconfine.tunnel_guard
              vars:
                tunnel_guard_tunnels:
                  - {name: telnet-over-stunnel, port: 992, allow_users: [root]}
        """))
    env["ANSIBLE_COLLECTIONS_PATH"] = str(project / "collections")
    got = subprocess.run([tool("ansible-playbook"), "-i", "inventory.yml", "site.yml", "-v"],
                         cwd=project, env=env, capture_output=True, text=True, check=False)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "changed=1" in got.stdout, got.stdout
    # the module that ran is the installed copy's: the checkout is on no path of this run
    assert str(ROOT) not in got.stdout + got.stderr
    kernel = run("nft", "list", "ruleset", ns=netns_host).stdout + run("iptables-save", ns=netns_host).stdout
    assert "tunnel_guard telnet-over-stunnel" in kernel, kernel


def test_ansible_builder_context_carries_the_collection_declarations(tarball, tmp_path):
    work = tmp_path / "ee"
    work.mkdir()
    (work / "collections").mkdir()
    (work / "collections" / tarball.name).write_bytes(tarball.read_bytes())
    (work / "execution-environment.yml").write_text(textwrap.dedent(f"""\
        version: 3
        images:
          base_image:
            name: registry.invalid/ee-minimal:latest
        dependencies:
          ansible_core:
            package_pip: ansible-core==2.19.14
          ansible_runner:
            package_pip: ansible-runner
          galaxy:
            collections:
              - name: /build/collections/{tarball.name}
                type: file
        additional_build_files:
          - src: collections/{tarball.name}
            dest: collections
        additional_build_steps:
          prepend_galaxy:
            - COPY _build/collections /build/collections
        """))
    env = clean_env(tmp_path)
    got = subprocess.run([tool("ansible-builder"), "create", "--file", "execution-environment.yml",
                          "--context", "context"], cwd=work, env=env, capture_output=True, text=True, check=False)
    assert got.returncode == 0, got.stdout + got.stderr
    context = work / "context"
    # Containerfile for podman, Dockerfile when only docker is expected (neither is installed here)
    (containerfile,) = [p.read_text() for p in (context / "Containerfile", context / "Dockerfile") if p.exists()]
    assert "ansible-galaxy" in containerfile and "COPY _build/collections /build/collections" in containerfile
    assert (context / "_build" / "collections" / tarball.name).is_file()
    assert tarball.name in (context / "_build" / "requirements.yml").read_text()
    # What the image build does once the collection is installed: run the context's introspection
    # script over the installed collections. Here: the same tarball, installed into a scratch path.
    got = subprocess.run([tool("ansible-galaxy"), "collection", "install", "-p", str(tmp_path / "cols"),
                          str(tarball)], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert got.returncode == 0, got.stdout + got.stderr
    introspect = context / "_build" / "scripts" / "introspect.py"
    assert introspect.is_file(), sorted(p.name for p in (context / "_build" / "scripts").iterdir())
    out = tmp_path / "introspected"
    out.mkdir()
    got = subprocess.run([sys.executable, str(introspect), "introspect", "--sanitize", "--write-bindep", str(out / "bindep.txt"),
                          "--write-pip", str(out / "requirements.txt"), str(tmp_path / "cols")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert got.returncode == 0, got.stdout + got.stderr
    wanted_sys = [line for line in (ROOT / "bindep.txt").read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
    assert (out / "bindep.txt").is_file(), got.stdout + got.stderr
    got_sys = (out / "bindep.txt").read_text()
    for line in wanted_sys:
        assert f"{line}  # from collection paranoid.netconfine" in got_sys, got_sys
    wanted_pip = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
    got_pip = (out / "requirements.txt").read_text() if (out / "requirements.txt").exists() else ""
    for line in wanted_pip:
        assert line.split("=")[0] in got_pip, got_pip


def test_bindep_finds_nothing_missing_on_this_machine():
    got = subprocess.run([tool("bindep"), "--brief", "--file", str(ROOT / "bindep.txt")],
                         capture_output=True, text=True, check=False)
    assert got.returncode == 0 and got.stdout.strip() == "", (
        "missing on this machine (add them to scripts/bootstrap's DEB_PACKAGES): " + got.stdout + got.stderr)
