"""A campaign spread over worker machines with Fabric: `./inv run FILE --workers hosts.toml`.

Each worker (a `[workers.X]` of an inventory, testbed.inventory) gets a copy of the project
through SFTP and runs runs of the campaign, one at a time, as `python -m experiments run FILE
--runs I` on its own Mininet testbed and analyses it there; each finished run's results folder
is fetched back and merged into one results tree on this machine (`results/<experiment>/<run-id>/`,
the same layout as a local campaign: traffic/, logs/, events.json, metrics.json, analysis/ with
each run's analysis as its worker made it, one analysis report and one summary.md). The captures
stay on the worker (the parquet files of their parsed frames come back) unless `fetch_pcaps`,
or `analyze=False` (then nothing else records the packets). Before each run the worker's clock
is measured against this one (testbed.clock) and recorded with the run. The runs are handed
out from one queue, so a fast worker takes more of them.

Nothing is lost silently: a worker whose connection breaks is dropped and the run it had goes
back into the queue for the others; a run that fails on a worker (no results) is retried on
another (up to `max_attempts`); every attempt, its worker and what happened are in
metadata.json (`attempts`, `workers`) and in summary.md. Runs already fetched stay where they
are whatever happens later; runs no worker could finish are listed as `not_run` and the campaign
is marked incomplete.

Before the first run every worker is checked (reachable, host key known, key accepted, root,
the commands and Python packages a Mininet testbed needs): one error names each worker and what
it lacks.
"""

from __future__ import annotations

import json
import logging
import queue
import shlex
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
from fabric import Connection

from analysis.events import read_events, write_events
from experiments.config import Experiment, RunSpec, resolve_runs
from experiments.journal import (
    Journal,
    Resumed,
    campaign_line,
    metrics_from_dict,
)
from experiments.metrics import RunMetrics, summarize
from experiments.remote import RemoteError
from experiments.report import write_summary
from experiments.runner import (
    _analyze,
    _now,
    _write_json,
    open_campaign,
)
from testbed.clock import measure_offset
from testbed.inventory import InventoryError, Machine, MachineError, check_machines, load_inventory
from testbed.signals import Interrupted, SignalGuard
from testbed.ssh import HostKeyPolicy
from testbed.sshnet import REPO, project_tarball

log = logging.getLogger("experiments.workers")


class WorkerLost(RuntimeError):
    """The connection to a worker broke (or it cannot be reached any more)."""


def _connection(m: Machine, known_hosts: str, timeout: float = 15.0) -> Connection:
    """A Fabric connection whose host key is judged by testbed.ssh's HostKeyPolicy, the one
    SshHost uses (Fabric's default would add unknown keys silently). New keys were accepted, if
    at all, by check_machines before: here an unknown key is refused."""
    c = Connection(
        host=m.address,
        user=m.user,
        port=m.port,
        connect_timeout=timeout,
        connect_kwargs={
            "key_filename": m.key,
            "allow_agent": False,
            "look_for_keys": False,
        },
    )
    HostKeyPolicy(known_hosts, accept_new=False).apply(c.client)
    try:
        c.open()
    except BaseException:
        # a refused host key raises after the key exchange with the transport still open: the
        # worker's sshd would keep that unauthenticated session until its LoginGraceTime.
        # (c.close() would do nothing: Fabric sets c.transport only once open() succeeded)
        c.client.close()
        raise
    c.transport.set_keepalive(5)
    return c


class Worker:
    """One worker machine: its connection, its copy of the project, what it ran."""

    def __init__(self, m: Machine, known_hosts: str):
        self.m = m
        self.name = m.name
        self.known_hosts = known_hosts
        self.conn: Connection | None = None
        self.project = ""
        self.lost: str | None = None
        self.quarantined: str | None = None
        self.streak: list[int] = []  # the runs it failed in a row (since its last success)
        self.done: list[str] = []

    @property
    def out(self) -> bool:
        """Takes no more runs: its connection broke or it was quarantined."""
        return bool(self.lost or self.quarantined)

    def open(self, tarball: Path, stamp: str) -> None:
        self.conn = _connection(self.m, self.known_hosts)
        self.project = f"{self.m.workdir}/project-{stamp}-{self.name}"
        self.conn.run(f"mkdir -p {shlex.quote(self.project)}", hide=True, in_stream=False)
        self.conn.put(str(tarball), f"{self.project}.tar.gz")
        self.conn.run(
            f"tar -xzf {shlex.quote(self.project)}.tar.gz -C {shlex.quote(self.project)} "
            f"&& rm -f {shlex.quote(self.project)}.tar.gz",
            hide=True,
            in_stream=False,
        )

    def close(self, clean: bool = True) -> None:
        if self.conn is None:
            return
        try:
            if clean and self.lost is None and self.conn.is_connected:
                self.conn.run(
                    f"rm -rf {shlex.quote(self.project)}", hide=True, in_stream=False, warn=True
                )
        except Exception as e:  # noqa: BLE001 - closing goes on
            log.warning("worker %s: cleaning up failed: %s", self.name, e)
        self.conn.close()


class Campaign:
    """The coordinator: a queue of runs, a thread per worker, one merged results tree."""

    def __init__(
        self,
        exp: Experiment,
        workers: list[Worker],
        run_dir: Path,
        meta: dict[str, Any],
        *,
        max_attempts: int = 2,
        progress: bool = True,
        on_dispatch: Callable[[str, RunSpec], None] | None = None,
        journal: Journal | None = None,
        resumed: Resumed | None = None,
        quarantine_after: int = 3,
        analyze: bool = True,
        fetch_pcaps: bool = False,
        clock_skew: dict[str, float] | None = None,
    ):
        self.exp = exp
        self.workers = workers
        self.run_dir = run_dir
        self.meta = meta
        self.max_attempts = max_attempts
        self.progress = progress
        self.on_dispatch = on_dispatch  # called when a run is handed to a worker (tests)
        self.journal = journal
        self.quarantine_after = quarantine_after
        # the workers analyse their own runs; their captures come back only when asked (or
        # when nothing analyses them: then they are the run's only record of the packets)
        self.analyze = analyze
        self.fetch_pcaps = fetch_pcaps or not analyze
        self.clock_skew = clock_skew or {}  # test hook: a fake offset added by a worker's probe
        self.runs = {r.index: r for r in resolve_runs(exp)}
        self.finished: dict[int, RunMetrics] = dict(resumed.finished) if resumed else {}
        self.events: dict[int, list[dict[str, Any]]] = dict(resumed.events) if resumed else {}
        self.todo: queue.Queue[int] = queue.Queue()
        for i in self.runs:
            if i not in self.finished:
                self.todo.put(i)
                self._journal("queued", run=i, label=self.runs[i].label)
        self.attempts: dict[int, int] = dict.fromkeys(self.runs, 0)
        self.failed_on: dict[int, set[str]] = {i: set() for i in self.runs}
        self.failed: dict[int, str] = {}  # gave up: the last reason
        self.lock = threading.Lock()
        self.remote_file = self._remote_experiment_path()

    def say(self, line: str) -> None:
        log.info(line)
        if self.progress:
            print(line, file=sys.stderr, flush=True)

    def _remote_experiment_path(self) -> str:
        """Where the experiment file goes in a worker's copy: its place in the repository
        when it is one of ours (relative references keep working), else campaign/."""
        src = Path(self.exp.source).resolve()
        try:
            return str(src.relative_to(REPO))
        except ValueError:
            return f"campaign/{src.name}"

    def _journal(self, event: str, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.write(event, **fields)

    def _record(self, **attempt: Any) -> None:
        with self.lock:
            self.meta.setdefault("attempts", []).append({"time": _now(), **attempt})
            self._save_meta()

    def _save_meta(self) -> None:
        workers = {  # a resumed campaign's earlier workers stay listed
            **self.meta.get("workers", {}),
            **{
                w.name: {
                    "address": w.m.address,
                    "user": w.m.user,
                    "runs": w.done,
                    "lost": w.lost,
                    "quarantined": w.quarantined,
                }
                for w in self.workers
            },
        }
        self.meta["workers"] = workers
        self.meta["runs_done"] = len(self.finished)
        _write_json(self.run_dir / "metadata.json", self.meta)

    # ---- a worker's loop ---------------------------------------------------------------------

    def serve(self, w: Worker) -> None:
        assert w.conn is not None
        exp_text = self.exp.text
        w.conn.run(
            f"mkdir -p {shlex.quote(str(Path(w.project, self.remote_file).parent))}",
            hide=True,
            in_stream=False,
        )
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
            f.write(exp_text)
            f.flush()
            w.conn.put(f.name, f"{w.project}/{self.remote_file}")
        while True:
            try:
                idx = self.todo.get_nowait()
            except queue.Empty:
                if self._all_settled():
                    return
                time.sleep(0.5)  # a run another worker holds may come back
                continue
            spec = self.runs[idx]
            with self.lock:  # a run that failed here goes elsewhere while elsewhere exists
                others = [
                    o
                    for o in self.workers
                    if o is not w and not o.out and o.name not in self.failed_on[idx]
                ]
                if w.name in self.failed_on[idx] and others:
                    self.todo.put(idx)
                    idx = -1
            if idx < 0:
                time.sleep(0.5)
                continue
            with self.lock:
                self.attempts[idx] += 1
                attempt = self.attempts[idx]
            self.say(f"[{w.name}] run {idx + 1}/{len(self.runs)} {spec.label} (attempt {attempt})")
            self._journal("started", run=idx, label=spec.label, where=w.name, attempt=attempt)
            if self.on_dispatch:
                self.on_dispatch(w.name, spec)
            try:
                self._run_one(w, spec, attempt, self.clock_offset(w))
            except WorkerLost as e:
                w.lost = str(e)
                self._record(
                    run=idx, label=spec.label, worker=w.name, outcome="worker lost", error=str(e)
                )
                self.say(f"[{w.name}] LOST ({e}); {spec.label} goes back to the queue")
                self._journal(
                    "failed", run=idx, label=spec.label, where=w.name, error=f"worker lost: {e}"
                )
                self._retry_or_give_up(idx, f"worker {w.name} lost: {e}", count=False)
                return
            except Exception as e:  # noqa: BLE001 - a run's failure is recorded, then retried
                self._record(
                    run=idx,
                    label=spec.label,
                    worker=w.name,
                    outcome="failed",
                    error=f"{type(e).__name__}: {e}",
                )
                self.say(f"[{w.name}] {spec.label} failed: {e}")
                self._journal(
                    "failed",
                    run=idx,
                    label=spec.label,
                    where=w.name,
                    error=f"{type(e).__name__}: {e}",
                )
                with self.lock:
                    self.failed_on[idx].add(w.name)
                    w.streak.append(idx)
                self._retry_or_give_up(idx, f"failed on {w.name}: {e}")
                if len(w.streak) >= self.quarantine_after:
                    self._quarantine(w, f"{type(e).__name__}: {e}")
                    return
            else:
                w.streak.clear()
                w.done.append(spec.label)
                self._journal("finished", run=idx, label=spec.label, where=w.name)
                self._record(run=idx, label=spec.label, worker=w.name, outcome="done")
                m = self.finished[idx]
                self.say(
                    f"[{w.name}] {spec.label} done: goodput {m.goodput_mbit:.1f} Mbit/s, "
                    f"{'intact' if m.intact else 'DATA NOT INTACT'}"
                )

    def _quarantine(self, w: Worker, last_error: str) -> None:
        """The worker failed its last K runs: it takes no more, and those runs get back the
        attempts it spent (the fault was the machine's, not theirs), back in the queue even
        when they had been given up."""
        with self.lock:
            runs = [self.runs[i].label for i in w.streak]
            w.quarantined = (
                f"failed {len(w.streak)} runs in a row ({', '.join(runs)}); last: {last_error}"
            )
            alive = [o for o in self.workers if not o.out]
            for idx in w.streak:
                self.attempts[idx] -= 1
                self.failed_on[idx].discard(w.name)
                if idx in self.failed and alive:
                    del self.failed[idx]
                    self.todo.put(idx)
            w.streak.clear()
            self._save_meta()
        self._journal("quarantined", worker=w.name, reason=w.quarantined)
        self.say(f"[{w.name}] QUARANTINED: {w.quarantined}; its runs go back to the queue")

    def clock_offset(self, w: Worker) -> dict[str, Any]:
        """The worker's clock against ours, measured now over its connection (testbed.clock);
        a failed probe is recorded, not fatal (the run itself says whether the worker works)."""
        assert w.conn is not None
        try:
            return measure_offset(
                w.conn.client, w.m.python, add_s=self.clock_skew.get(w.name, 0.0)
            ).as_dict()
        except Exception as e:  # noqa: BLE001
            return {"error": f"{type(e).__name__}: {e}"}

    def _all_settled(self) -> bool:
        with self.lock:
            return len(self.finished) + len(self.failed) == len(self.runs) or all(
                w.out for w in self.workers
            )

    def _retry_or_give_up(self, idx: int, reason: str, count: bool = True) -> None:
        with self.lock:
            if not count:  # a lost worker is not the run's fault: it gets another full chance
                self.attempts[idx] -= 1
            alive = [w for w in self.workers if not w.out]
            if self.attempts[idx] < self.max_attempts and alive:
                self.todo.put(idx)
            else:
                self.failed[idx] = reason

    def _run_one(self, w: Worker, spec: RunSpec, attempt: int, clock: dict[str, Any]) -> None:
        assert w.conn is not None
        res_dir = f"{w.project}/results-r{spec.index}-a{attempt}"
        args = [
            w.m.python,
            "-m",
            "experiments",
            "run",
            self.remote_file,
            "--runs",
            str(spec.index),
            "--results",
            res_dir,
        ]
        if not self.analyze:
            args.append("--no-analysis")
        for o in self.exp.overrides:
            args += ["--set", o]
        cmd = f"cd {shlex.quote(w.project)} && PYTHONPATH=. {shlex.join(args)}"
        limit = (spec.traffic.duration_s or 10) + spec.traffic.timeout_s
        logfile = self.run_dir / "logs" / "workers" / f"{w.name}-run{spec.index}-a{attempt}.log"
        logfile.parent.mkdir(parents=True, exist_ok=True)
        try:
            r = w.conn.run(
                cmd, hide=True, in_stream=False, warn=True, timeout=max(300, 3 * limit + 120)
            )
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise WorkerLost(f"{type(e).__name__}: {e}") from e
        logfile.write_text(
            f"$ {cmd}\nexit {r.exited}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        )
        if r.exited == -1 or not w.conn.is_connected or not w.conn.transport.is_active():
            raise WorkerLost("the connection closed during the run")
        if r.exited not in (0, 1):  # 1: a finished run whose data or flows were not right
            tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
            raise RuntimeError(f"exit {r.exited}: {tail}")
        self._fetch(w, spec, res_dir, clock)

    def _fetch(self, w: Worker, spec: RunSpec, res_dir: str, clock: dict[str, Any]) -> None:
        """The worker's campaign folder of this run, fetched (tar over SFTP) and merged: its
        analysis (metrics, figures, the parsed captures' parquet files) and, with fetch_pcaps,
        its captures; without them a run's transfer is its metrics, not its packets."""
        assert w.conn is not None
        tgz = f"{res_dir}.tgz"
        exclude = "" if self.fetch_pcaps else "--exclude='*.pcap' "
        try:
            w.conn.run(
                f"tar -czf {shlex.quote(tgz)} {exclude}-C {shlex.quote(res_dir)} .",
                hide=True,
                in_stream=False,
            )
            with tempfile.TemporaryDirectory() as d:
                local = Path(d) / "r.tgz"
                w.conn.get(tgz, str(local))
                with tarfile.open(local) as tar:
                    tar.extractall(Path(d) / "x", filter="data")
                found = list((Path(d) / "x" / self.exp.name).glob("*/metrics.json"))
                if len(found) != 1:
                    raise RuntimeError(f"no results of {spec.label} on {w.name} ({res_dir})")
                self._merge(w, spec, found[0].parent, clock)
            w.conn.run(
                f"rm -rf {shlex.quote(res_dir)} {shlex.quote(tgz)}",
                hide=True,
                in_stream=False,
                warn=True,
            )
        except (paramiko.SSHException, EOFError) as e:
            raise WorkerLost(f"{type(e).__name__}: {e}") from e

    def _merge(self, w: Worker, spec: RunSpec, src: Path, clock: dict[str, Any]) -> None:
        meta = json.loads((src / "metadata.json").read_text())
        labels = [r["label"] for r in meta["resolved_runs"]]
        if labels != [spec.label]:
            raise RuntimeError(f"{w.name} ran {labels}, not {spec.label}: do the files differ?")
        metrics = json.loads((src / "metrics.json").read_text())["runs"]
        if len(metrics) != 1:
            raise RuntimeError(f"{w.name}: {spec.label} did not finish ({meta.get('error')})")
        label = spec.label
        for sub in ("pcap", "traffic", "logs", "logs/testbed"):
            if (src / sub / label).is_dir():
                shutil.copytree(src / sub / label, self.run_dir / sub / label, dirs_exist_ok=True)
        view = label.replace("/", "-")  # the worker's analysis of it (analysis/<view>/)
        if (src / "analysis" / view).is_dir():
            shutil.copytree(  # its captures (fetch_pcaps) are hard-linked in by _analyze
                src / "analysis" / view,
                self.run_dir / "analysis" / view,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("*.pcap"),
            )
        keep = self.run_dir / "logs" / "workers" / label.replace("/", "-")
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "metadata.json", keep / "metadata.json")
        if (src / "logs" / "runner.log").exists():
            shutil.copyfile(src / "logs" / "runner.log", keep / "runner.log")
        m = metrics_from_dict(metrics[0])
        machines = meta.get("machines", {})
        machines.setdefault(label, {})["clock_offsets"] = {w.name: clock}
        with self.lock:
            self.meta.setdefault("machines", {}).update(machines)
            self.finished[spec.index] = m
            self.events[spec.index] = read_events(src / "events.json")
            self._write_results()

    def _write_results(self) -> None:
        runs = [self.finished[i] for i in sorted(self.finished)]
        _write_json(
            self.run_dir / "metrics.json",
            {"runs": [r.as_dict() for r in runs], "summary": summarize(runs)},
        )
        write_events(self.run_dir / "events.json", self.event_entries())
        self._save_meta()

    def event_entries(self) -> list[dict[str, Any]]:
        return [e for i in sorted(self.events) for e in self.events[i]]


def run_on_workers(
    exp: Experiment,
    workers_file: str,
    *,
    results_root: Path | None = None,
    accept_new_host_keys: bool = False,
    progress: bool = True,
    analyze: bool = True,
    max_attempts: int = 2,
    on_dispatch: Callable[[str, RunSpec], None] | None = None,
    resume: Path | None = None,
    quarantine_after: int = 3,
    allow_mixed: bool = False,
    fetch_pcaps: bool = False,
    clock_skew: dict[str, float] | None = None,
) -> int:
    """Run the campaign on the workers; 0 when every run finished intact, 1 otherwise.
    RemoteError (nothing has run) when the file or a worker is not usable; ResumeError when
    `resume` is not a campaign folder of this experiment."""
    try:
        inv = load_inventory(workers_file)
    except InventoryError as e:
        raise RemoteError(str(e)) from None
    if not inv.workers:
        raise RemoteError(f"{workers_file}: no [workers.NAME] in it")
    try:  # every worker checked before anything runs (paramiko, the same checks as hosts)
        hosts = check_machines(
            list(inv.workers.values()), inv.known_hosts, accept_new_host_keys=accept_new_host_keys
        )
    except MachineError as e:
        raise RemoteError(str(e)) from None
    try:
        kernels = {name: worker_kernel(hosts[name], m) for name, m in inv.workers.items()}
    finally:
        for h in hosts.values():
            h.close()
    if len(set(kernels.values())) > 1 and not allow_mixed:
        raise RemoteError(
            "the workers run different kernels: "
            + ", ".join(f"worker {n}: {k}" for n, k in kernels.items())
            + " (their results would not be one campaign's; --allow-mixed runs it anyway, each "
            "run's kernel in metadata.json's machines)"
        )
    runs = resolve_runs(exp)
    run_dir, journal, resumed, meta = open_campaign(exp, runs, resume, results_root)
    meta["network"] = {"kind": "workers", **inv.describe()}
    meta["worker_kernels"] = kernels
    meta["mixed_kernels"] = len(set(kernels.values())) > 1
    _write_json(run_dir / "metadata.json", meta)
    journal.write("campaign", **campaign_line(resume is not None), runs=len(runs))
    workers = [Worker(m, inv.known_hosts) for m in inv.workers.values()]
    campaign = Campaign(
        exp,
        workers,
        run_dir,
        meta,
        max_attempts=max_attempts,
        progress=progress,
        on_dispatch=on_dispatch,
        journal=journal,
        resumed=resumed,
        quarantine_after=quarantine_after,
        analyze=analyze,
        fetch_pcaps=fetch_pcaps,
        clock_skew=clock_skew,
    )
    kept = f" ({len(resumed.finished)} finished before, kept)" if resume is not None else ""
    campaign.say(
        f"{exp.name}: {len(runs) - len(resumed.finished)} runs{kept} on {len(workers)} "
        f"workers -> {run_dir}"
    )
    stamp = f"{int(time.time())}"
    guard = SignalGuard()  # SIGTERM/SIGHUP unwind through the finally below, like Ctrl-C
    try:
        guard.__enter__()
        with tempfile.TemporaryDirectory() as d:
            tarball = Path(d) / "project.tar.gz"
            tarball.write_bytes(project_tarball())
            for w in workers:
                try:
                    w.open(tarball, stamp)
                except Exception as e:  # noqa: BLE001 - the others go on
                    w.lost = f"could not set up: {type(e).__name__}: {e}"
                    campaign.say(f"[{w.name}] LOST before its first run: {w.lost}")
                    continue
                off = campaign.clock_offset(w)  # each worker's clock, once before any run
                meta.setdefault("clock_offsets", {})[w.name] = off
                if "offset_s" in off:
                    campaign.say(
                        f"[{w.name}] clock {off['offset_s'] * 1e3:+.2f} ms "
                        f"(\u00b1{off['uncertainty_s'] * 1e3:.2f} ms) against this machine"
                    )
        threads = [
            threading.Thread(target=campaign.serve, args=(w,), name=f"worker-{w.name}", daemon=True)
            for w in workers
            if not w.lost
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
        for idx in campaign.runs:  # anything left in the queue when the last worker went
            if idx not in campaign.finished and idx not in campaign.failed:
                campaign.failed[idx] = "no worker left to run it"
        meta["not_run"] = [
            {"run": i, "label": campaign.runs[i].label, "reason": r}
            for i, r in sorted(campaign.failed.items())
        ]
        complete = not campaign.failed
        meta["complete"] = complete
        if analyze and campaign.finished:
            campaign.say(
                f"campaign report over {len(campaign.finished)} runs (analysis/: the workers' "
                "analyses, and the captures fetched back, if any)"
            )
            report = _analyze(run_dir, meta, campaign.event_entries())
            if report:
                campaign.say(f"report: {report}")
    except BaseException as e:
        meta["interrupted"] = isinstance(e, KeyboardInterrupt | Interrupted)
        meta["error"] = f"{type(e).__name__}: {e}"
        journal.write("interrupted" if meta["interrupted"] else "stopped", error=meta["error"])
        raise
    finally:
        guard.__exit__()
        meta["end"] = _now()
        with campaign.lock:
            campaign._write_results()
        for w in workers:
            w.close()
        journal.close()
    summary = write_summary([run_dir], run_dir / "summary.md", title=exp.name)
    with summary.open("a") as f:
        f.write(workers_section(meta))
    campaign.say(f"results: {run_dir}  (summary: {summary.name})")
    for line in workers_section(meta).strip().splitlines():
        campaign.say(line)
    runs_ok = all(m.ok and m.intact for m in campaign.finished.values())
    return 0 if complete and runs_ok else 1


KERNEL_PROBE = "import platform; print(platform.release())  # the worker's kernel"


def worker_kernel(host: Any, m: Machine) -> str:
    """The kernel release a worker runs (as its python sees it: the one the runs will see)."""
    res = host.run([m.python, "-c", KERNEL_PROBE], check=False, timeout=60)
    return res.stdout.strip() or f"unknown (exit {res.returncode})"


def workers_section(meta: dict[str, Any]) -> str:
    """summary.md's account of who ran what, every retry and every run not run."""
    lines = ["## Workers", ""]
    if meta.get("mixed_kernels"):
        lines += [
            "MIXED KERNELS (--allow-mixed): "
            + ", ".join(f"{n} {k}" for n, k in meta["worker_kernels"].items()),
            "",
        ]
    clocks = meta.get("clock_offsets") or {}
    if clocks:
        lines += [
            "Clock offsets against the coordinator before the first run (each run's own, "
            "measured before it, is in metadata.json machines; a run whose offset exceeds its "
            "smallest RTT says so in its report): "
            + ", ".join(
                f"{n} {o['offset_s'] * 1e3:+.2f} ms \u00b1{o['uncertainty_s'] * 1e3:.2f} ms"
                if "offset_s" in o
                else f"{n} not measured ({o.get('error')})"
                for n, o in clocks.items()
            ),
            "",
        ]
    for name, w in meta.get("workers", {}).items():
        state = "ok"
        if w.get("lost"):
            state = f"LOST: {w['lost']}"
        elif w.get("quarantined"):
            state = f"QUARANTINED: {w['quarantined']}"
        lines.append(f"- {name} ({w['address']}): {len(w['runs'])} runs {w['runs']}; {state}")
    retried = [a for a in meta.get("attempts", []) if a["outcome"] != "done"]
    if retried:
        lines += ["", "Attempts that did not finish (each run went back to the queue):", ""]
        lines += [
            f"- run {a['run']} {a['label']} on {a['worker']}: {a['outcome']} ({a.get('error')})"
            for a in retried
        ]
        done = {a["label"]: a["worker"] for a in meta["attempts"] if a["outcome"] == "done"}
        for a in retried:
            if a["label"] in done:
                lines.append(f"- {a['label']}: finished on {done[a['label']]} instead")
    if meta.get("not_run"):
        lines += ["", "NOT RUN (the campaign is incomplete):", ""]
        lines += [f"- {r['label']}: {r['reason']}" for r in meta["not_run"]]
    return "\n".join(lines) + "\n"
