"""Render a report in real headless chromium and ask the page itself whether its figures decoded."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = [
    "/usr/bin/chromium",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const d = document.createElement("div");
  d.id = "imgcheck"; d.dataset.ok = ok; d.dataset.total = imgs.length;
  d.dataset.widths = imgs.map(i => i.naturalWidth).join(",");
  document.body.appendChild(d);
});
</script>"""


def rendered_images(report: Path) -> tuple[int, int, list[int]]:
    """(decoded images, images, natural widths) as chromium sees the report."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(report.read_text().replace("</body>", CHECK + "</body>"))
        p = subprocess.run(
            [
                *CHROMIUM,
                f"--user-data-dir={tmp}/profile",
                "--dump-dom",
                "--virtual-time-budget=5000",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    m = re.search(
        r'id="imgcheck" data-ok="(\d+)" data-total="(\d+)" data-widths="([\d,]*)"', p.stdout
    )
    if not m:
        raise AssertionError(f"chromium did not run the check: rc={p.returncode} {p.stderr[-500:]}")
    widths = [int(w) for w in m.group(3).split(",") if w]
    return int(m.group(1)), int(m.group(2)), widths
