"""The one interface through which experiments reach a host.

Everything an experiment does to a machine (run a command, start and stop a process, move a
file, capture) goes through `Host`, so the same experiment can later run on real machines over
SSH (paramiko) by providing another implementation. `MininetHost` is the first one: a process
in a Mininet node's network namespace on this machine.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from testbed import registry


class HostCommandError(RuntimeError):
    """A command on a host failed; carries what it printed so the caller can show it."""

    def __init__(self, host: str, args: list[str], returncode: int, stdout: str, stderr: str):
        self.host, self.args_, self.returncode = host, args, returncode
        self.stdout, self.stderr = stdout, stderr
        detail = (stderr or stdout).strip().splitlines()[-3:]
        super().__init__(f"{host}: {' '.join(args)!r} exited {returncode}: {' | '.join(detail)}")


class LineReader:
    """The lines of one output stream of a process, each seen once, waited for with a deadline.

    `read(left)` returns what the stream has within `left` seconds: bytes, b"" at its end, None
    when nothing came. A local pipe and an SSH channel differ only in that function."""

    def __init__(self, read: Callable[[float], bytes | None], proc: Process):
        self._read = read
        self._proc = proc  # named in the error
        self._buf = b""
        self.last: deque[str] = deque(maxlen=5)  # the latest lines, for error messages

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first new line matching `pattern`; TimeoutError, saying what the process printed
        last, if the stream ended or time ran out first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                line = raw.decode(errors="replace")
                self.last.append(line)
                if rx.search(line):
                    return line
            left = deadline - time.monotonic()
            chunk = self._read(left) if left > 0 else None
            if not chunk:
                p = self._proc
                raise TimeoutError(
                    f"{p.host}: {p.args[0]} did not print /{pattern}/ within {timeout}s "
                    f"(rc={p.returncode}); it printed: {list(self.last)}"
                )
            self._buf += chunk


@runtime_checkable
class Process(Protocol):
    """A process started on a host (by `Host.start`), whatever the host is: stopped by its own
    pid and process group, never by name."""

    host: str
    args: list[str]
    pid: int

    @property
    def returncode(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def wait_for_line(
        self, pattern: str, *, stream: str = "stderr", timeout: float = 10.0
    ) -> str: ...

    def write_stdin(self, data: bytes) -> None: ...

    def send_signal(self, sig: int) -> None: ...

    def stop(self, sig: int = signal.SIGINT, timeout: float = 5.0) -> int: ...


class BaseProcess:
    """What a Process does the same way wherever it runs: wait for a line it prints, stop it.
    A subclass has args, _lines (an empty dict to begin with), wait(), send_signal() and
    _stream(name): the read function of that PIPE'd stream for a LineReader (ValueError if the
    stream is not a pipe)."""

    def wait_for_line(self, pattern: str, *, stream: str = "stderr", timeout: float = 10.0) -> str:
        """Block until the process prints a line matching `pattern` on a PIPE'd stream.

        This is how we learn that a server listens or tcpdump captures: the process says so,
        so nothing has to sleep and hope.
        """
        reader = self._lines.get(stream)
        if reader is None:
            reader = self._lines[stream] = LineReader(self._stream(stream), self)
        return reader.wait_for(pattern, timeout)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 5.0) -> int:
        """Ask politely (SIGINT lets tcpdump flush), then insist."""
        self.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send_signal(signal.SIGKILL)
            return self.wait(timeout)


class LocalProcess(BaseProcess):
    """A process on this machine (in a namespace or not), behind the Process protocol."""

    def __init__(
        self, host: str, args: list[str], popen: subprocess.Popen, files: list[IO] | None = None
    ):
        self.host = host
        self.args = args
        self.popen = popen
        self.pid = popen.pid
        self._files = files or []
        self._token = registry.record_pid(popen.pid)
        self._lines: dict[str, LineReader] = {}

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def stdout(self) -> IO | None:
        return self.popen.stdout

    @property
    def stdin(self) -> IO | None:
        return self.popen.stdin

    def wait(self, timeout: float | None = None) -> int:
        rc = self.popen.wait(timeout)
        self._release()
        return rc

    def write_stdin(self, data: bytes) -> None:
        if self.popen.stdin is None:
            raise ValueError(f"stdin of {self.args[0]} is not a pipe")
        self.popen.stdin.write(data)
        self.popen.stdin.flush()

    def _stream(self, stream: str) -> Callable[[float], bytes | None]:
        pipe = self.popen.stderr if stream == "stderr" else self.popen.stdout
        if pipe is None:
            raise ValueError(f"{stream} of {self.args[0]} is not a pipe")
        return _fd_reader(pipe.fileno())

    def send_signal(self, sig: int) -> None:
        """To the process group when the process leads one (so its children get it too),
        else to the process alone."""
        if self.popen.poll() is not None:
            return
        try:
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def _release(self) -> None:
        for f in self._files:
            f.close()
        self._files = []
        for pipe in (self.popen.stdout, self.popen.stderr, self.popen.stdin):
            if pipe is not None and self.popen.poll() is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        if self._token is not None and self.popen.poll() is not None:
            registry.forget_pid(self._token)
            self._token = None


class Host:
    """What an experiment may do to a host. An implementation has name, processes (the ones
    start() made), alive, put(), get(), and _run(args, timeout, input) and _start(args, stdout,
    stderr, stdin, env), which run() and start() wrap."""

    name: str
    processes: list

    @property
    def alive(self) -> bool:
        """False once the host (its namespace, its connection) is gone."""
        raise NotImplementedError

    def run(
        self,
        args: list[str],
        *,
        check: bool = True,
        timeout: float | None = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a command to its end (text output); HostCommandError if check and it failed."""
        res = self._run(args, timeout, input)
        if check and res.returncode != 0:
            raise HostCommandError(self.name, args, res.returncode, res.stdout, res.stderr)
        return res

    def start(
        self,
        args: list[str],
        *,
        stdout: Path | int | None = None,
        stderr: Path | int | None = None,
        stdin: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Process:
        """Start a process (stdout, stderr: a file, subprocess.PIPE or None for nothing;
        stdin: subprocess.PIPE or None; env: added to the environment)."""
        proc = self._start(args, stdout, stderr, stdin, env)
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        """Stop every process started here that still runs (teardown)."""
        for proc in self.processes:
            if proc.returncode is None:
                proc.stop(signal.SIGTERM, timeout=3)
            else:
                self._reap(proc)
        self.processes.clear()

    def _reap(self, proc: Process) -> None:
        """What stop_all() does with a process that ended by itself."""

    def put(self, local: Path, remote: Path) -> None:
        raise NotImplementedError

    def get(self, remote: Path, local: Path) -> None:
        raise NotImplementedError


def _fd_reader(fd: int) -> Callable[[float], bytes | None]:
    """Read the fd directly: a buffered readline() could swallow the line we wait for into
    Python's buffer, where select() no longer sees it."""

    def read(left: float) -> bytes | None:
        if not select.select([fd], [], [], left)[0]:
            return None
        return os.read(fd, 65536)

    return read


def _open(target: Path | int | None) -> tuple[IO | int | None, IO | None]:
    if isinstance(target, Path | str):
        f = open(target, "wb")  # noqa: SIM115 - closed by LocalProcess._release
        return f, f
    return (subprocess.DEVNULL if target is None else target), None


class MininetHost(Host):
    """A Mininet node seen through the Host interface (same machine, its own namespace)."""

    def __init__(self, node):
        self.node = node
        self.name: str = node.name
        self.processes: list[LocalProcess] = []

    @property
    def pid(self) -> int:
        return self.node.pid

    @property
    def alive(self) -> bool:
        shell = self.node.shell  # Mininet sets it to None in Node.cleanup()
        return shell is not None and shell.poll() is None

    def _argv(self, args: list[str]) -> list[str]:
        return ["mnexec", "-a", str(self.node.pid), *args]

    def _run(
        self, args: list[str], timeout: float | None, input: str | None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self._argv(args), capture_output=True, text=True, timeout=timeout, input=input
        )

    def _start(self, args: list[str], stdout, stderr, stdin, env) -> LocalProcess:
        out, fo = _open(stdout)
        err, fe = _open(stderr)
        full_env = None if env is None else {**os.environ, **env}
        popen = subprocess.Popen(
            ["mnexec", "-da", str(self.node.pid), *args],
            stdout=out,
            stderr=err,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            env=full_env,
        )
        return LocalProcess(self.name, args, popen, [f for f in (fo, fe) if f])

    def _reap(self, proc: LocalProcess) -> None:
        proc._release()

    def put(self, local: Path, remote: Path) -> None:
        # Same machine and file system: a copy is all it takes.
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)

    def get(self, remote: Path, local: Path) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(remote, local)

    def __repr__(self) -> str:
        return f"<MininetHost {self.name} pid={self.node.pid}>"
