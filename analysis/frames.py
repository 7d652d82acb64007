"""Parsed frames with a parquet cache beside each pcap, and discovery of a run's captures.

Why a cache: reports are re-generated far more often than captures change. Since the parser reads
the common segment layouts with numpy, re-reading the parquet file is no faster than parsing a
headers-only capture (about 1 s per million segments either way, analysis/README.md); the cache
still spares the per-segment path on captures full of unusual layouts. The cache is keyed on the pcap's size and mtime plus our parser
version, stored inside the parquet metadata, so a changed pcap (or parser) is parsed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.pcap import CaptureError, parse_buffer, parse_pcap

PARSER_VERSION = 2
_META_KEY = b"mptcp_lab_cache"


def cache_path(pcap: str | os.PathLike) -> Path:
    """`x/client-eth0.pcap` -> `x/client-eth0.pcap.parquet` (ignored by git)."""
    p = Path(pcap)
    return p.with_name(p.name + ".parquet")


def _stamp(pcap: Path) -> dict:
    st = pcap.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "parser": PARSER_VERSION}


def _read_cache(pcap: Path) -> pd.DataFrame | None:
    cp = cache_path(pcap)
    try:
        meta = pq.read_schema(cp).metadata or {}
        if json.loads(meta.get(_META_KEY, b"{}")) != _stamp(pcap):
            return None
        return pq.read_table(cp).to_pandas()
    except (OSError, ValueError, pa.ArrowException):
        return None


def _write_cache(pcap: Path, df: pd.DataFrame) -> None:
    cp = cache_path(pcap)
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_META_KEY] = json.dumps(_stamp(pcap)).encode()
    tmp = cp.with_name(cp.name + f".tmp{os.getpid()}")
    try:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
        os.replace(tmp, cp)
    except OSError:  # a read-only results folder still gets its analysis, just uncached
        tmp.unlink(missing_ok=True)


def load_pcap(pcap: str | os.PathLike, cache: bool = True) -> pd.DataFrame:
    """Frames of one capture; `df.attrs["cache"]` says "hit" or "miss" (so tests can tell)."""
    pcap = Path(pcap)
    if not pcap.exists():
        raise CaptureError(pcap, "no such file")
    if cache:
        df = _read_cache(pcap)
        if df is not None:
            df.attrs["cache"] = "hit"
            return df
    df = parse_pcap(pcap)
    if cache:
        _write_cache(pcap, df)
    df.attrs["cache"] = "miss"
    return df


def find_pcaps(root: str | os.PathLike) -> list[Path]:
    """Every capture under root, recursively, in a stable order."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix in (".pcap", ".pcapng") and p.is_file())


def load_many(pcaps: list[Path], cache: bool = True) -> pd.DataFrame:
    """Concatenate several captures (categoricals are unified: host, intf, addresses)."""
    frames = [load_pcap(p, cache=cache) for p in pcaps]
    frames = [f for f in frames if len(f)]
    if not frames:
        return parse_empty()
    if len(frames) == 1:
        return frames[0]
    # A column with no value at all in one capture (no MPTCP option: every MPTCP option stripped
    # on the way) may come back from the parquet cache as object, not category: unify it too.
    cat_cols = sorted(
        {c for f in frames for c in f.columns if isinstance(f[c].dtype, pd.CategoricalDtype)}
    )
    for c in cat_cols:
        for f in frames:
            if not isinstance(f[c].dtype, pd.CategoricalDtype):
                f[c] = f[c].astype(object).astype("category")
        cats = pd.Index(sorted({str(x) for f in frames for x in f[c].cat.categories}))
        for f in frames:
            f[c] = f[c].cat.set_categories(cats)
    return pd.concat(frames, ignore_index=True)


def parse_empty() -> pd.DataFrame:
    """The frame table's columns with no rows (a run whose captures are all empty)."""
    df = parse_buffer(
        b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00"
        + b"\x00" * 8
        + b"\xff\xff\x00\x00"
        + b"\x01\x00\x00\x00"
    )
    df.insert(2, "host", pd.Categorical([]))
    df.insert(3, "intf", pd.Categorical([]))
    return df
