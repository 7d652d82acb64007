"""The Host interface over SSH, against a real OpenSSH server on this machine's loopback."""

import signal
import socket
import subprocess
from pathlib import Path

import pytest

from testbed.host import HostCommandError, LocalProcess, Process
from testbed.ssh import SshHost

SSHD = Path("/usr/sbin/sshd")
pytestmark = [
    pytest.mark.net,
    pytest.mark.skipif(not SSHD.exists(), reason="openssh-server (./inv installs it)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True
        )
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nPidFile {d / 'pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nSubsystem sftp internal-sftp\n"
    )
    privsep = Path("/run/sshd")  # sshd insists on it; made here only if missing, then removed
    made = not privsep.exists()
    privsep.mkdir(mode=0o755, exist_ok=True)
    server = LocalProcess(
        "local",
        ["sshd"],
        subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE
        ),
    )
    try:
        server.wait_for_line("Server listening on", timeout=10)
        yield {"port": port, "key": str(d / "client")}
    finally:
        try:
            server.stop(signal.SIGTERM)
        finally:
            if made:
                privsep.rmdir()


@pytest.fixture
def host(sshd):
    h = SshHost("remote", "127.0.0.1", port=sshd["port"], key_filename=sshd["key"])
    yield h
    h.close()


def test_run_and_errors(host):
    res = host.run(["sh", "-c", "echo out; echo err >&2"])
    assert (res.returncode, res.stdout, res.stderr) == (0, "out\n", "err\n")
    assert host.run(["cat"], input="via stdin").stdout == "via stdin"
    with pytest.raises(HostCommandError, match="exited 3"):
        host.run(["sh", "-c", "exit 3"])
    assert host.run(["false"], check=False).returncode == 1


def test_start_wait_for_line_and_stop_the_whole_group(host, tmp_path):
    proc = host.start(["sh", "-c", "sleep 300 & echo ready >&2; wait"], stderr=subprocess.PIPE)
    proc.wait_for_line("ready")
    children = host.run(["pgrep", "-g", str(proc.pid)]).stdout.split()
    assert len(children) == 2  # the shell and its sleep share the process group
    proc.stop(signal.SIGTERM)
    assert proc.returncode is not None
    for pid in children:  # gone, or dead and waiting to be reaped (a zombie)
        state = host.run(["ps", "-o", "stat=", "-p", pid], check=False).stdout.strip()
        assert state[:1] in ("", "Z"), (pid, state)  # "ZN" under nice


def test_output_to_file_and_files_both_ways(host, tmp_path):
    out = tmp_path / "out.txt"
    proc = host.start(["sh", "-c", "echo hello; exit 4"], stdout=out)
    assert proc.wait(10) == 4
    assert out.read_text() == "hello\n"
    src = tmp_path / "a.bin"
    src.write_bytes(bytes(range(256)) * 100)
    remote = tmp_path / "remote" / "b.bin"
    host.put(src, remote)
    host.get(remote, tmp_path / "c.bin")
    assert (tmp_path / "c.bin").read_bytes() == src.read_bytes()


def test_a_remote_process_is_a_process_and_takes_input(host):
    """The same Process protocol as a local one: the link emulator, for one, talks to its
    process through stdin and waits for its answers line by line."""
    proc = host.start(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert isinstance(proc, Process)
    proc.write_stdin(b"first\nsecond\n")
    assert proc.wait_for_line("^first$", stream="stdout") == "first"
    assert proc.wait_for_line("^second$", stream="stdout") == "second"
    with pytest.raises(TimeoutError, match="did not print /third/"):
        proc.wait_for_line("third", stream="stdout", timeout=0.5)
    proc.stop(signal.SIGTERM)
    assert host.alive
