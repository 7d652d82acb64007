"""The real ./inv bootstrap, run in a temporary copy of the repository.

Stand-ins first on PATH behave as on a fresh Debian machine: `dpkg-query` knows only the packages
listed in a file and exits 1 ("no packages found matching X") for the others, `apt-get` records
its arguments (and "installs" by adding to that file). The venv step runs against a stand-in
PYTHON whose `-m venv` makes a .venv whose python records pip's arguments and whose pip install
leaves a bin/invoke that records how it was called. Fast and offline; the last test runs the
script against this machine's real dpkg database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEBS = (
    "mininet tcpdump tshark iperf3 iputils-ping iproute2 nftables iptables ethtool procps "
    "chromium openssh-server python3-venv parallel mptcpize nginx"
).split()

DPKG_QUERY = """#!/bin/sh
# dpkg-query -W -f=FORMAT PKG...: as dpkg does, a line per known package, an error per unknown one
shift 2
rc=0
for p in "$@"; do
  if grep -qx "$p" "$FAKE/installed"; then
    echo "$p install ok installed"
  else
    echo "dpkg-query: no packages found matching $p" >&2
    rc=1
  fi
done
exit $rc
"""

APT_GET = """#!/bin/sh
echo "$*" >> "$FAKE/apt-get.log"
if [ -n "${FAKE_APT_FAIL:-}" ] && [ "$1" = "$FAKE_APT_FAIL" ]; then
  echo "E: Unable to locate package tshark" >&2
  exit 100
fi
if [ "$1" = install ]; then
  for a in "$@"; do case "$a" in -*|install) ;; *) echo "$a" >> "$FAKE/installed" ;; esac; done
fi
"""

ID = """#!/bin/sh
[ "$1" = -u ] && { echo 1000; exit 0; }
exec /usr/bin/id "$@"
"""

# PYTHON=stand-in: `-m venv DIR` makes DIR/bin/python, itself a stand-in for pip
PYTHON = """#!/bin/sh
echo "$*" >> "$FAKE/python.log"
[ "$1 $2" = "-m venv" ] || exit 2
mkdir -p "$3/bin"
cp "$FAKE/venv-python" "$3/bin/python"
"""

VENV_PYTHON = """#!/bin/sh
echo "$*" >> "$FAKE/pip.log"
[ -n "${FAKE_PIP_FAIL:-}" ] && { echo "ERROR: Could not find a version of invoke" >&2; exit 1; }
case "$*" in
  *"-e .[dev]"*) cp "$FAKE/invoke" "$(dirname "$0")/invoke" ;;
esac
"""

INVOKE = """#!/bin/sh
echo "$*" >> "$FAKE/invoke.log"
echo "invoke ran: $*"
"""


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fresh(tmp_path):
    """A copy of the repository's bootstrap files and a fake machine; returns (repo, fake, env)."""
    repo, fake, bin_ = tmp_path / "repo", tmp_path / "fake", tmp_path / "bin"
    for d in (repo, fake, bin_):
        d.mkdir()
    for name in ("inv", "pyproject.toml", "tasks.py"):
        shutil.copy2(REPO / name, repo / name)
    # a fresh machine: the base system, none of the testbed's tools
    (fake / "installed").write_text("iproute2\nprocps\n")
    _script(bin_ / "dpkg-query", DPKG_QUERY)
    _script(bin_ / "apt-get", APT_GET)
    _script(fake / "python", PYTHON)
    _script(fake / "venv-python", VENV_PYTHON)
    _script(fake / "invoke", INVOKE)
    env = {
        **os.environ,
        "PATH": f"{bin_}:{os.environ['PATH']}",
        "FAKE": str(fake),
        "PYTHON": str(fake / "python"),
    }
    return repo, fake, env


def _inv(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(repo / "inv"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def _log(fake: Path, name: str) -> list[str]:
    p = fake / f"{name}.log"
    return p.read_text().splitlines() if p.exists() else []


def test_fresh_machine_installs_what_is_missing_then_runs_invoke(fresh):
    repo, fake, env = fresh
    r = _inv(repo, env, "--list")
    assert r.returncode == 0, r.stderr
    missing = [p for p in DEBS if p not in ("iproute2", "procps")]
    assert _log(fake, "apt-get") == [
        "update -q",
        "install -y -q --no-install-recommends " + " ".join(missing),
    ]
    assert "inv: Debian packages missing: " + " ".join(missing) in r.stderr
    assert "inv: running apt-get install" in r.stderr
    # the venv: created with $PYTHON, pip upgraded, the project installed with its dev extra
    assert _log(fake, "python") == ["-m venv .venv"]
    assert _log(fake, "pip") == [
        "-m pip install -q --upgrade pip",
        "-m pip install -q -e .[dev]",
    ]
    assert "inv: preparing .venv" in r.stderr and "inv: .venv ready" in r.stderr
    assert _log(fake, "invoke") == ["--list"] and r.stdout == "invoke ran: --list\n"

    # the second call: everything is there, nothing is done or said, invoke runs
    r2 = _inv(repo, env, "test", "-k", "x")
    assert r2.returncode == 0 and r2.stderr == ""
    assert len(_log(fake, "apt-get")) == 2 and len(_log(fake, "pip")) == 2
    assert _log(fake, "invoke") == ["--list", "test -k x"]


def test_changed_pyproject_rebuilds_the_venv(fresh):
    repo, fake, env = fresh
    (fake / "installed").write_text("\n".join(DEBS) + "\n")
    assert _inv(repo, env, "--list").returncode == 0
    stamp = (repo / ".venv" / ".mptcp-lab-stamp").read_text()
    with (repo / "pyproject.toml").open("a") as f:
        f.write("# a new dependency\n")
    r = _inv(repo, env, "--list")
    assert r.returncode == 0, r.stderr
    assert "inv: pyproject.toml changed since .venv was built: updating .venv" in r.stderr
    assert _log(fake, "python") == ["-m venv .venv"]  # the venv is kept, its contents updated
    assert _log(fake, "pip")[2:] == [
        "-m pip install -q --upgrade pip",
        "-m pip install -q -e .[dev]",
    ]
    assert (repo / ".venv" / ".mptcp-lab-stamp").read_text() != stamp
    assert _log(fake, "invoke") == ["--list", "--list"] and _log(fake, "apt-get") == []


def test_failing_apt_get_says_why_and_what_to_run(fresh):
    repo, fake, env = fresh
    r = _inv(repo, {**env, "FAKE_APT_FAIL": "install"}, "test")
    assert r.returncode == 100
    assert "E: Unable to locate package tshark" in r.stderr  # apt-get's own words
    assert "inv: FAILED (exit 100) while installing mininet" in r.stderr
    assert "inv: to fix it, run: apt-get install -y --no-install-recommends mininet" in r.stderr
    assert _log(fake, "invoke") == [] and not (repo / ".venv").exists()

    r = _inv(repo, {**env, "FAKE_APT_FAIL": "update"}, "test")
    assert r.returncode == 100 and "while updating the package lists" in r.stderr
    assert "check the network" in r.stderr


def test_not_root_says_so_before_trying(fresh, tmp_path):
    repo, fake, env = fresh
    _script(tmp_path / "bin" / "id", ID)
    r = _inv(repo, env, "demo")
    assert r.returncode == 1 and _log(fake, "apt-get") == []
    assert "needs root" in r.stderr and "sudo ./inv demo" in r.stderr


def test_failing_pip_says_why_and_what_to_run(fresh):
    repo, fake, env = fresh
    (fake / "installed").write_text("\n".join(DEBS) + "\n")
    r = _inv(repo, {**env, "FAKE_PIP_FAIL": "1"}, "test")
    assert r.returncode == 1 and "Could not find a version" in r.stderr
    assert "inv: FAILED (exit 1) while upgrading pip in .venv" in r.stderr
    assert "needs access to PyPI" in r.stderr
    assert not (repo / ".venv" / ".mptcp-lab-stamp").exists() and _log(fake, "invoke") == []


def test_failing_venv_creation_says_what_to_run(fresh):
    repo, fake, env = fresh
    (fake / "installed").write_text("\n".join(DEBS) + "\n")
    r = _inv(repo, {**env, "PYTHON": str(fake / "nowhere")}, "test")
    assert r.returncode == 127
    assert "inv: FAILED (exit 127) while creating .venv" in r.stderr
    assert "apt-get install python3-venv" in r.stderr and _log(fake, "invoke") == []


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian machine")
def test_everything_installed_adds_well_under_a_second(fresh, tmp_path):
    """This machine's real dpkg database (the suite's machine has every package); apt-get stays a
    stand-in so that a missing package shows up as a failure here, not as an install."""
    repo, fake, env = fresh
    (tmp_path / "bin" / "dpkg-query").unlink()
    assert _inv(repo, env, "--list").returncode == 0  # builds the stand-in venv
    t = time.monotonic()
    r = _inv(repo, env, "--list")
    took = time.monotonic() - t
    assert r.returncode == 0 and r.stderr == "" and _log(fake, "apt-get") == []
    assert took < 0.5, took


def test_task_help_is_help_not_a_positional_argument(fresh):
    """`./inv run --help` asks invoke for the task's help (invoke alone would read --help as
    the experiment file's name); a flag later on the line is left alone."""
    repo, fake, env = fresh
    (fake / "installed").write_text("\n".join(DEBS) + "\n")
    for args in (["run", "--help"], ["analyze", "-h"], ["run", "x.toml", "--help"]):
        assert _inv(repo, env, *args).returncode == 0
    assert _log(fake, "invoke")[-3:] == ["--help run", "--help analyze", "run x.toml --help"]


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "invoke").exists(), reason="no .venv yet")
def test_the_rewritten_help_prints_the_run_tasks_help():
    """What ./inv hands invoke for `./inv run --help` (the test above) prints run's help. Not
    through ./inv itself: a stale .venv stamp would make it reinstall the venv here."""
    r = subprocess.run(
        [str(REPO / ".venv" / "bin" / "invoke"), "--help", "run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "Usage: inv[oke] [--core-opts] run" in r.stdout and "--resume" in r.stdout
    assert "no such experiment file" not in r.stdout + r.stderr
