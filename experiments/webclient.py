"""A small real HTTP client for the page-load workload (kind = "app"): a browser's fetch
pattern with the standard library's http.client.

    python experiments/webclient.py page --url http://10.0.3.2:8080/index.html \
        [--connections 6] [--loads 1] [--pause-s 0.5] [--timeout-s 60]
    python experiments/webclient.py video --base http://10.0.3.2:8080/video/ [--buffer-s 10]

One page load: a fresh connection fetches the HTML, the client reads every ``src``/``href`` in
it, and fetches those objects over ``--connections`` persistent HTTP/1.1 connections at once
(a browser opens six per host), each taking the next object as soon as it is free. The page
load time runs from the first connection attempt to the last object's last byte. ``--loads N``
repeats the visit N times (new connections each time) with ``--pause-s`` between visits, so a
link event can fall inside one load and the others measure the same path without it.

Prints one JSON line: each load's start and end (wall clock, as the runner's events), its time,
objects, bytes and errors (a status other than 200, a body shorter than Content-Length or than
the page's ``data-size``, a connection that failed), and the connection count. Exit status 0
when every load got every object whole, 1 otherwise.

``video``: an adaptive-bitrate player (throughput-based, as DASH players' simplest rule) over
webserve.py's ``--video`` segments; prints {"video": {startup_delay_s, rebuffer_s, stalls,
mean_bitrate_kbit, the bitrate and throughput of each segment, ...}}.

Why not curl: the page's objects must come from the HTML (curl takes a list of URLs) and be
checked against it, and the timing must include the HTML's fetch; the sockets are the kernel's
own TCP sockets as curl's would be, so `mptcpize` and our proxy carry it as they would curl.
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import sys
import threading
import time
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

READ = 64 * 1024


class _Refs(HTMLParser):
    """The objects a page references (src of script/img, href of stylesheets), in order, with
    the size the page declares for each (data-size), if any."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, int | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        ref = a.get("src") if tag in ("script", "img") else None
        if tag == "link" and (a.get("rel") or "") == "stylesheet":
            ref = a.get("href")
        if ref:
            size = a.get("data-size")
            self.refs.append((ref, int(size) if size and size.isdigit() else None))


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes, int | None]:
    """One GET on a persistent connection: status, body, Content-Length."""
    conn.request("GET", path, headers={"Connection": "keep-alive"})
    resp = conn.getresponse()
    length = resp.getheader("Content-Length")
    chunks = []
    while True:
        b = resp.read(READ)
        if not b:
            break
        chunks.append(b)
    return resp.status, b"".join(chunks), int(length) if length else None


def page_load(url: str, connections: int, timeout: float) -> dict:
    """One visit: the HTML, then its objects over `connections` connections."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    errors: list[str] = []
    got = {"bytes": 0, "objects": 0}
    lock = threading.Lock()
    start_wall, t0 = time.time(), time.monotonic()
    opened = 0
    try:
        first = http.client.HTTPConnection(host, port, timeout=timeout)
        opened += 1
        status, html, _ = _get(first, parts.path or "/")
    except OSError as e:
        return _load(start_wall, t0, 0, 0, [f"{url}: {type(e).__name__}: {e}"], 1)
    if status != 200:
        errors.append(f"{url}: HTTP {status}")
    parser = _Refs()
    parser.feed(html.decode(errors="replace"))
    todo: queue.Queue[tuple[str, int | None]] = queue.Queue()
    for ref in parser.refs:
        todo.put(ref)

    def worker(conn: http.client.HTTPConnection) -> None:
        while True:
            try:
                ref, size = todo.get_nowait()
            except queue.Empty:
                break
            path = urlsplit(urljoin(url, ref)).path
            try:
                status, body, length = _get(conn, path)
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(f"{path}: {type(e).__name__}: {e}")
                conn.close()  # a fresh connection for the next object
                continue
            problem = (
                f"HTTP {status}"
                if status != 200
                else f"{len(body)} of {length} bytes"
                if length is not None and len(body) != length
                else f"{len(body)} bytes, the page says {size}"
                if size is not None and len(body) != size
                else ""
            )
            with lock:
                got["bytes"] += len(body)
                got["objects"] += 1
                if problem:
                    errors.append(f"{path}: {problem}")
        conn.close()

    conns = [first] + [
        http.client.HTTPConnection(host, port, timeout=timeout)
        for _ in range(max(0, connections - 1))
    ]
    opened += len(conns) - 1
    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if got["objects"] < len(parser.refs) and not errors:
        errors.append(f"{got['objects']} of {len(parser.refs)} objects")
    return _load(start_wall, t0, got["objects"], got["bytes"] + len(html), errors, opened)


def _load(start_wall: float, t0: float, objects: int, nbytes: int, errors: list, opened: int):
    dt = time.monotonic() - t0
    return {
        "start_wall": round(start_wall, 6),
        "end_wall": round(start_wall + dt, 6),
        "page_load_s": round(dt, 4),
        "objects": objects,
        "bytes": nbytes,
        "connections": opened,
        "errors": errors[:20],
    }


def video(base: str, buffer_s: float, safety: float, timeout: float) -> dict:
    """Play an adaptive video: segments in order on one persistent connection, each at the
    highest bitrate below `safety` x the throughput estimate (harmonic mean of the last three
    segments' throughputs; the lowest bitrate first), the player's buffer capped at
    `buffer_s` (the client waits while it is full, as a player does). Playback starts once the
    first segment is in (startup delay) and stalls when the buffer runs dry (rebuffering)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    start_wall, t0 = time.time(), time.monotonic()
    status, body, _ = _get(conn, urljoin(parts.path or "/", "manifest.json"))
    if status != 200:
        raise OSError(f"manifest: HTTP {status}")
    man = json.loads(body)
    rates, seg_s = sorted(man["bitrates_kbit"]), float(man["segment_s"])
    tputs: list[float] = []  # kbit/s of each segment's download
    chosen: list[int] = []
    errors: list[str] = []
    buffer = 0.0  # seconds of video downloaded and not yet played
    startup = None
    rebuffer, stalls = 0.0, 0
    last = time.monotonic()
    for n in range(int(man["segments"])):
        if tputs:
            recent = tputs[-3:]
            est = len(recent) / sum(1 / t for t in recent)
            kbit = max([r for r in rates if r <= safety * est] or [rates[0]])
        else:
            kbit = rates[0]
        if startup is not None and buffer > buffer_s - seg_s:  # full: play, then fetch
            wait = buffer - (buffer_s - seg_s)
            time.sleep(wait)  # the player's own pace: real time passing is the workload
        now = time.monotonic()
        if startup is not None:
            buffer -= now - last
        last = now
        path = man["template"].format(kbit=kbit, n=n)
        t_seg = time.monotonic()
        try:
            status, body, length = _get(conn, path)
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"{path}: {type(e).__name__}: {e}")
            break
        dt = max(time.monotonic() - t_seg, 1e-6)
        if status != 200 or (length is not None and len(body) != length):
            errors.append(f"{path}: HTTP {status}, {len(body)} of {length} bytes")
        tputs.append(len(body) * 8 / 1000 / dt)
        chosen.append(kbit)
        now = time.monotonic()
        if startup is None:
            startup = now - t0
        else:
            buffer -= now - last
            if buffer < 0:  # the buffer ran dry while this segment came: a stall
                rebuffer += -buffer
                stalls += 1
                buffer = 0.0
        last = now
        buffer += seg_s
    conn.close()
    switches = sum(1 for a, b in zip(chosen, chosen[1:], strict=False) if a != b)
    return {
        "start_wall": round(start_wall, 6),
        "end_wall": round(start_wall + time.monotonic() - t0, 6),
        "startup_delay_s": None if startup is None else round(startup, 4),
        "rebuffer_s": round(rebuffer, 4),
        "stalls": stalls,
        "mean_bitrate_kbit": round(sum(chosen) / len(chosen), 1) if chosen else 0.0,
        "bitrates_kbit": chosen,
        "throughput_kbit": [round(t, 1) for t in tputs],
        "switches": switches,
        "segments": len(chosen),
        "segments_total": int(man["segments"]),
        "errors": errors[:20],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pg = sub.add_parser("page", help="page loads")
    pg.add_argument("--url", required=True)
    pg.add_argument("--connections", type=int, default=6)
    pg.add_argument("--loads", type=int, default=1)
    pg.add_argument("--pause-s", type=float, default=0.5)
    pg.add_argument("--timeout-s", type=float, default=60.0)
    vd = sub.add_parser("video", help="adaptive video playback")
    vd.add_argument("--base", required=True, help="http://HOST:PORT/video/")
    vd.add_argument("--buffer-s", type=float, default=10.0)
    vd.add_argument("--safety", type=float, default=0.8)
    vd.add_argument("--timeout-s", type=float, default=60.0)
    a = p.parse_args(argv)
    if a.cmd == "video":
        rep = video(a.base, a.buffer_s, a.safety, a.timeout_s)
        print(json.dumps({"video": rep}), flush=True)
        return 0 if not rep["errors"] and rep["segments"] == rep["segments_total"] else 1
    loads = []
    for i in range(a.loads):
        if i:
            time.sleep(a.pause_s)  # the visitor's think time: part of the workload
        loads.append(page_load(a.url, a.connections, a.timeout_s))
    print(json.dumps({"url": a.url, "connections": a.connections, "loads": loads}), flush=True)
    return 0 if all(not ld["errors"] for ld in loads) else 1


if __name__ == "__main__":
    sys.exit(main())
