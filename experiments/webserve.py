"""A real nginx serving a generated web page, for the page-load workload (kind = "app").

    python experiments/webserve.py --workdir W --listen 0.0.0.0 --port 8080 --seed 1 \
        [--objects 100 --total-bytes 2000000] [--video]

Writes, all inside W: the page (site/index.html referencing every object) and its objects,
nginx.conf, and then *becomes* nginx (exec: the runner's process is nginx's master, so a
SIGTERM stops it and its workers, and nothing is left behind) with its pid file, logs and
temporary folders in W. Nothing system-wide is read or written (``-e`` moves even the error log
nginx opens before reading its configuration). It runs as root, as the runner does, with
``user root`` so the workers can read W.

The page: ``--objects`` objects whose sizes are drawn (seeded) from a log-normal distribution,
median about 8 KB with a long tail, as the HTTP Archive's pages have (many small scripts,
styles and icons, a few large images), then scaled so the page weighs ``--total-bytes`` in all
(HTTP Archive's median page: about 2 MB in 70-100 requests). Same seed, same page.

``--video`` also writes an adaptive video (see experiments/webclient.py video) into
site/video/: for every bitrate in ``--bitrates`` (kbit/s) a segment of ``--segment-s`` seconds,
served as each of the ``--segments`` segments of that bitrate, and video/manifest.json.

Standard library only: a host runs it from the checkout it shares (``{repo}``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
from pathlib import Path

KINDS = [  # (extension, share of the objects): HTTP Archive's request mix, roughly
    ("js", 0.30),
    ("css", 0.10),
    ("png", 0.25),
    ("jpg", 0.25),
    ("woff2", 0.05),
    ("svg", 0.05),
]


def object_sizes(seed: int, n: int, total: int) -> list[int]:
    """`n` sizes from a seeded log-normal (median ~8 KB, sigma 1.3), scaled to sum to `total`
    (at least 100 bytes each)."""
    rng = random.Random(seed)
    raw = [rng.lognormvariate(math.log(8000), 1.3) for _ in range(n)]
    scale = total / sum(raw)
    sizes = [max(100, int(r * scale)) for r in raw]
    sizes[sizes.index(max(sizes))] += total - sum(sizes)  # exact total
    return sizes


def make_page(site: Path, seed: int, n: int, total: int) -> dict[str, int]:
    """The page and its objects under `site`; returns {path: size} of the objects."""
    rng = random.Random(seed + 1)
    objects: dict[str, int] = {}
    exts = [e for e, share in KINDS for _ in range(round(share * 100))]
    for i, size in enumerate(object_sizes(seed, n, total)):
        name = f"o/{i:03d}.{rng.choice(exts)}"
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        objects[name] = size
    tags = []
    for name, size in objects.items():
        ext = name.rsplit(".", 1)[1]
        if ext == "js":
            tags.append(f'<script src="/{name}" data-size="{size}"></script>')
        elif ext == "css":
            tags.append(f'<link rel="stylesheet" href="/{name}" data-size="{size}">')
        else:
            tags.append(f'<img src="/{name}" data-size="{size}" alt="">')
    html = (
        "<!doctype html>\n<html><head><title>page</title></head><body>\n"
        + "\n".join(tags)
        + "\n</body></html>\n"
    )
    (site / "index.html").write_text(html)
    return objects


def make_video(site: Path, seed: int, bitrates: list[int], segments: int, seg_s: float) -> None:
    """One segment file per bitrate (kbit/s; size = bitrate x segment duration), requested as
    every segment of that bitrate (the client asks /video/<kbit>.m4s?n=<i>: nginx serves the
    file whatever the query; only the sizes matter to the network), and the manifest."""
    rng = random.Random(seed + 2)
    video = site / "video"
    video.mkdir(parents=True, exist_ok=True)
    for kbit in bitrates:
        (video / f"{kbit}.m4s").write_bytes(rng.randbytes(int(kbit * 1000 / 8 * seg_s)))
    manifest = {
        "bitrates_kbit": bitrates,
        "segments": segments,
        "segment_s": seg_s,
        "template": "/video/{kbit}.m4s?n={n}",
    }
    (video / "manifest.json").write_text(json.dumps(manifest))


def nginx_conf(workdir: Path, listen: str, port: int) -> str:
    w = workdir
    return f"""# written by experiments/webserve.py for one run; everything lives in {w}
user root;
worker_processes 1;
daemon off;
pid {w}/nginx.pid;
error_log {w}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {w}/access.log;
    client_body_temp_path {w}/tmp/body;
    proxy_temp_path {w}/tmp/proxy;
    fastcgi_temp_path {w}/tmp/fastcgi;
    uwsgi_temp_path {w}/tmp/uwsgi;
    scgi_temp_path {w}/tmp/scgi;
    types {{
        text/html html; application/javascript js; text/css css; image/png png;
        image/jpeg jpg; font/woff2 woff2; image/svg+xml svg; video/iso.segment m4s;
        application/json json;
    }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60;
    keepalive_requests 10000;
    server {{
        listen {listen}:{port};
        root {w}/site;
    }}
}}
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--listen", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--objects", type=int, default=100)
    p.add_argument("--total-bytes", type=int, default=2_000_000)
    p.add_argument("--video", action="store_true", help="also write an adaptive video")
    p.add_argument(
        "--bitrates", default="1000,2500,5000,10000,20000", help="kbit/s, comma-separated"
    )
    p.add_argument("--segments", type=int, default=10)
    p.add_argument("--segment-s", type=float, default=2.0)
    p.add_argument("--nginx", default="nginx", help="the nginx program")
    a = p.parse_args(argv)
    w = a.workdir.resolve()
    site = w / "site"
    objects = make_page(site, a.seed, a.objects, a.total_bytes)
    if a.video:
        make_video(site, a.seed, [int(b) for b in a.bitrates.split(",")], a.segments, a.segment_s)
    for t in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (w / "tmp" / t).mkdir(parents=True, exist_ok=True)
    conf = w / "nginx.conf"
    conf.write_text(nginx_conf(w, a.listen, a.port))
    print(
        json.dumps({"objects": len(objects), "bytes": sum(objects.values()), "conf": str(conf)}),
        flush=True,
    )
    nginx = shutil.which(a.nginx)
    if nginx is None:
        print(f"webserve: {a.nginx} not found (Debian package nginx)", file=sys.stderr)
        return 127
    os.execv(nginx, [nginx, "-p", str(w), "-c", str(conf), "-e", str(w / "error.log")])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
