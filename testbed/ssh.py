"""The Host interface over SSH (paramiko), for running an experiment on real machines.

Same contract as MininetHost: run a command, start and stop a process, move files. A remote
process is started in its own session and stopped by that session's process group, never by
name; its pid comes from the remote shell itself before it execs the command.
"""

from __future__ import annotations

import select
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import paramiko

from testbed.host import BaseProcess, Host, HostCommandError, LineReader


class RemoteProcess(BaseProcess):
    """A process on an SSH host, behind the testbed.host.Process protocol."""

    def __init__(
        self,
        host: SshHost,
        args: list[str],
        channel: paramiko.Channel,
        stdout: Path | int | None,
        stderr: Path | int | None,
        stdin: int | None = None,
    ):
        self.host = host.name
        self.args = args
        self._ssh = host
        self._chan = channel
        self._buf = {"stdout": b"", "stderr": b""}
        first = b""
        while not first.endswith(b"\n"):  # the remote shell's `echo $$` comes first
            chunk = channel.recv(1)
            if not chunk:
                raise HostCommandError(host.name, args, -1, "", "remote start failed")
            first += chunk
        self.pid = int(first)
        self._sinks: dict[str, IO | None] = {}
        self._pipe = {"stdout": stdout == subprocess.PIPE, "stderr": stderr == subprocess.PIPE}
        self._stdin = stdin == subprocess.PIPE
        for name, target in (("stdout", stdout), ("stderr", stderr)):
            self._sinks[name] = open(target, "wb") if isinstance(target, Path | str) else None  # noqa: SIM115
        self._lock = threading.Lock()
        self._lines: dict[str, LineReader] = {}
        self._pump = threading.Thread(target=self._copy, daemon=True)
        if not any(self._pipe.values()):
            self._pump.start()

    def _read_ready(self) -> None:
        """Move what the channel has into the sinks (files) or the line buffers (pipes)."""
        with self._lock:
            for name, ready, recv in (
                ("stdout", self._chan.recv_ready, self._chan.recv),
                ("stderr", self._chan.recv_stderr_ready, self._chan.recv_stderr),
            ):
                while ready():
                    data = recv(65536)
                    if self._sinks[name]:
                        self._sinks[name].write(data)
                    elif self._pipe[name]:
                        self._buf[name] += data

    def _copy(self) -> None:
        while not self._chan.exit_status_ready():
            select.select([self._chan], [], [], 0.5)
            self._read_ready()
        self._read_ready()

    @property
    def returncode(self) -> int | None:
        return self._chan.recv_exit_status() if self._chan.exit_status_ready() else None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._chan.exit_status_ready():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            select.select([self._chan], [], [], min(left or 0.5, 0.5))
            if not self._pump.is_alive():
                self._read_ready()
        self._release()
        return self._chan.recv_exit_status()

    def _stream(self, stream: str) -> Callable[[float], bytes | None]:
        if not self._pipe[stream]:
            raise ValueError(f"{stream} of {self.args[0]} is not a pipe")

        def read(left: float) -> bytes | None:
            deadline = time.monotonic() + left
            while True:
                self._read_ready()
                data, self._buf[stream] = self._buf[stream], b""
                if data:
                    return data
                if self._chan.exit_status_ready():
                    return b""
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                select.select([self._chan], [], [], left)

        return read

    def write_stdin(self, data: bytes) -> None:
        if not self._stdin:
            raise ValueError(f"stdin of {self.args[0]} is not a pipe")
        self._chan.sendall(data)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            self._ssh.run(["kill", f"-{int(sig)}", "--", f"-{self.pid}"], check=False)

    def _release(self) -> None:
        self._read_ready()
        for f in self._sinks.values():
            if f:
                f.close()
        self._sinks = {k: None for k in self._sinks}


@dataclass(frozen=True)
class HostKeyPolicy:
    """How a server's host key is judged, for every SSH connection of the project: SshHost
    (paramiko) and the workers' Fabric connections (experiments/workers.py) apply this one
    object to their paramiko client, so the rule cannot drift between two copies.

    known_hosts: the server's key must be in that file (a changed key is always refused); an
    unknown one too, unless accept_new, which then records it there (after_connect). Without
    known_hosts (a lab machine we set up ourselves) the key is trusted on first use."""

    known_hosts: str | None = None
    accept_new: bool = False

    def apply(self, client: paramiko.SSHClient) -> None:
        """Load the known keys into `client` and set what happens to an unknown one."""
        if not self.known_hosts:  # a lab machine we set up ourselves: trust it on first use
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            return
        if Path(self.known_hosts).exists():
            client.load_host_keys(self.known_hosts)
        elif not self.accept_new:
            raise FileNotFoundError(f"known_hosts file {self.known_hosts} does not exist")
        if self.accept_new:  # recorded in known_hosts once connected
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())

    def after_connect(self, client: paramiko.SSHClient) -> None:
        """Record a newly accepted key."""
        if self.known_hosts and self.accept_new:
            client.save_host_keys(self.known_hosts)


class SshHost(Host):
    """A real machine reached over SSH, seen through the Host interface."""

    def __init__(
        self,
        name: str,
        hostname: str,
        *,
        port: int = 22,
        username: str = "root",
        key_filename: str | None = None,
        connect_timeout: float = 10.0,
        known_hosts: str | None = None,
        accept_new_host_key: bool = False,
        env: dict[str, str] | None = None,
    ):
        """known_hosts, accept_new_host_key: the HostKeyPolicy the server's key is judged by.
        env: set for every process started here (e.g. PYTHONPATH of a copied project)."""
        self.name = name
        self.env = dict(env or {})
        self.client = paramiko.SSHClient()
        policy = HostKeyPolicy(known_hosts, accept_new_host_key)
        policy.apply(self.client)
        try:
            self.client.connect(
                hostname,
                port=port,
                username=username,
                key_filename=key_filename,
                timeout=connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except BaseException:
            self.client.close()  # a refused key or host key leaves no half-open session
            raise
        policy.after_connect(self.client)
        self.processes: list[RemoteProcess] = []

    @property
    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def _run(
        self, args: list[str], timeout: float | None, input: str | None
    ) -> subprocess.CompletedProcess:
        stdin, stdout, stderr = self.client.exec_command(shlex.join(args), timeout=timeout)
        if input is not None:
            stdin.write(input)
        stdin.channel.shutdown_write()
        out, err = stdout.read().decode(), stderr.read().decode()
        rc = stdout.channel.recv_exit_status()
        return subprocess.CompletedProcess(args, rc, out, err)

    def _start(self, args: list[str], stdout, stderr, stdin, env) -> RemoteProcess:
        env = {**self.env, **(env or {})}
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # setsid: its own process group, so stop() reaches everything it started
        inner = f"echo $$; exec {'env ' + exports + ' ' if exports else ''}{shlex.join(args)}"
        chan = self.client.get_transport().open_session()
        no_input = "" if stdin == subprocess.PIPE else " </dev/null"
        chan.exec_command(f"exec setsid -w sh -c {shlex.quote(inner)}{no_input}")
        return RemoteProcess(self, args, chan, stdout, stderr, stdin)

    def put(self, local: Path, remote: Path) -> None:
        self.run(["mkdir", "-p", str(Path(remote).parent)])
        with self.client.open_sftp() as sftp:
            sftp.put(str(local), str(remote))

    def get(self, remote: Path, local: Path) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        with self.client.open_sftp() as sftp:
            sftp.get(str(remote), str(local))

    def close(self) -> None:
        self.stop_all()
        self.client.close()
