"""Group TCP subflows into MPTCP connections and give every data segment its data sequence number.

Done the way Wireshark does it, so tshark can check us: a connection is identified by its keys
(token = top 32 bits of SHA-256(key), IDSN = low 64 bits); MP_JOIN carries the token of the SYN's
receiver; in v1 the SYN carries no key and the client's key shows up in the third ACK. A segment's
DSN is the mapping in force (DSS mapping whose subflow range covers the segment) plus the offset of
the segment inside it; 32-bit DSNs and data ACKs are expanded against the sender's IDSN.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

M32 = 1 << 32
M64 = 1 << 64


def key_token(key: int) -> int:
    """MPTCP token of a 64-bit key: the most significant 32 bits of SHA-256(key)."""
    return int.from_bytes(hashlib.sha256(int(key).to_bytes(8, "big")).digest()[:4], "big")


def key_idsn(key: int) -> int:
    """Initial data sequence number of a key: the least significant 64 bits of SHA-256(key)."""
    return int.from_bytes(hashlib.sha256(int(key).to_bytes(8, "big")).digest()[-8:], "big")


@dataclass(frozen=True)
class Connection:
    """One MPTCP connection as seen in a set of captures."""

    conn: int
    version: int
    client_key: int | None
    server_key: int | None
    client_token: int | None
    server_token: int | None
    client_idsn: int | None
    server_idsn: int | None
    kind: str = "mptcp"  # "tcp": a plain TCP connection, its sequence space used as the DSN


def _first(s: pd.Series):
    s = s.dropna()
    return None if s.empty else int(s.iloc[0])


def _addr_codes(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of source and destination addresses over one shared category list."""
    src, dst = df["src"], df["dst"]
    if isinstance(src.dtype, pd.CategoricalDtype) and isinstance(dst.dtype, pd.CategoricalDtype):
        cats = src.cat.categories.union(dst.cat.categories)
        return (
            src.cat.set_categories(cats).cat.codes.to_numpy().astype(np.int64),
            dst.cat.set_categories(cats).cat.codes.to_numpy().astype(np.int64),
        )
    codes, _ = pd.factorize(pd.concat([src.astype(str), dst.astype(str)], ignore_index=True))
    return codes[: len(df)].astype(np.int64), codes[len(df) :].astype(np.int64)


def subflow_ids(df: pd.DataFrame) -> pd.DataFrame:
    """Add `subflow` (same 4-tuple in either direction = same subflow, across files; numbered in
    order of first appearance) and `from_initiator` (the row was sent by the side that sent the
    subflow's SYN, or by the first sender when the SYN was not captured)."""
    s, d = _addr_codes(df)
    a = s * 65536 + df["sport"].to_numpy().astype(np.int64)  # endpoint ids: address, port
    b = d * 65536 + df["dport"].to_numpy().astype(np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    span = int(hi.max()) + 1 if len(df) else 1
    if span < 1 << 31:  # one integer per endpoint pair: a hash factorize, numbered as they appear
        codes, uniq = pd.factorize(lo * span + hi)
        codes = codes.astype(np.int64)
    else:
        uniq, first, inv = np.unique(
            np.stack([lo, hi], 1), axis=0, return_index=True, return_inverse=True
        )
        rank = np.empty(len(uniq), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
        codes = rank[inv.ravel()] if len(df) else np.zeros(0, dtype=np.int64)
    out = df.copy(deep=False)  # new columns only: no need to copy the 60 we have
    out["subflow"] = codes
    n_sf = len(uniq)
    initiator = np.full(n_sf, -1, dtype=np.int64)
    syn_only = out["syn"].to_numpy() & ~out["ack_flag"].to_numpy()
    rows = np.flatnonzero(syn_only)[::-1]  # reversed: the first SYN of a subflow wins
    initiator[codes[rows]] = a[rows]
    missing = initiator < 0
    if missing.any():  # no SYN captured: the side that sent the subflow's first row
        initiator[missing] = _first_sender(codes, a, n_sf)[missing]
    out["from_initiator"] = a == initiator[codes]
    return out


def _first_sender(codes: np.ndarray, a: np.ndarray, n: int) -> np.ndarray:
    """Per subflow: the endpoint id of its first row (fancy assignment keeps the last write,
    so write in reverse)."""
    out = np.full(n, -1, dtype=np.int64)
    rows = np.arange(len(codes))[::-1]
    out[codes[rows]] = a[rows]
    return out


def find_connections(df: pd.DataFrame) -> tuple[list[Connection], dict[int, tuple[int, bool]]]:
    """Connections from MP_CAPABLE keys, and for every subflow: (conn, initiator is client)."""
    conns: list[Connection] = []
    sub_conn: dict[int, tuple[int, bool]] = {}
    by_token: dict[int, tuple[int, str]] = {}  # token -> (conn, role of the key's owner)
    mpc = df[df["mpc_version"].notna()]
    for sf, g in mpc.groupby("subflow", sort=False):
        g = g.sort_values("time", kind="stable")
        fwd, rev = g[g["from_initiator"]], g[~g["from_initiator"]]
        client_key = _first(fwd["mpc_send_key"])
        server_key = _first(rev["mpc_send_key"]) or _first(fwd["mpc_recv_key"])
        # the same connection may show up again in another file: match on keys
        same = [c for c in conns if c.client_key == client_key and c.server_key == server_key]
        if same:
            conn = same[0]
        else:
            conn = Connection(
                conn=len(conns),
                version=int(g["mpc_version"].iloc[0]),
                client_key=client_key,
                server_key=server_key,
                client_token=None if client_key is None else key_token(client_key),
                server_token=None if server_key is None else key_token(server_key),
                client_idsn=None if client_key is None else key_idsn(client_key),
                server_idsn=None if server_key is None else key_idsn(server_key),
            )
            conns.append(conn)
            if conn.client_token is not None:
                by_token[conn.client_token] = (conn.conn, "client")
            if conn.server_token is not None:
                by_token[conn.server_token] = (conn.conn, "server")
        sub_conn[int(sf)] = (conn.conn, True)
    joins = df[df["join_token"].notna() & df["syn"] & ~df["ack_flag"]]
    for sf, g in joins.groupby("subflow", sort=False):
        hit = by_token.get(int(g["join_token"].iloc[0]))
        if hit is not None:
            # the SYN goes to the token's owner: the initiator is the other side
            sub_conn[int(sf)] = (hit[0], hit[1] == "server")
    return conns, sub_conn


def unwrap32(low: np.ndarray, base: int) -> np.ndarray:
    """Expand 32-bit sequence values (in time order) to offsets from `base`'s low 32 bits,
    following wraps: each step is taken as the shortest way round the 2^32 circle."""
    if len(low) == 0:
        return np.zeros(0, dtype=np.int64)
    rel = (low.astype(np.int64) - (base & 0xFFFFFFFF)) % M32
    steps = np.diff(rel, prepend=0)
    steps = (steps + (1 << 31)) % M32 - (1 << 31)
    return np.cumsum(steps)


def _expand(vals: np.ndarray, is64: np.ndarray, base: int | None) -> np.ndarray:
    """Absolute 64-bit values (uint64): 64-bit ones as they are, 32-bit ones unwrapped against
    `base` (the IDSN of the data's sender); uint64 arithmetic wraps mod 2^64 like the DSN space."""
    out = vals.astype(np.uint64)
    small = ~is64
    if small.any() and base is not None:
        rel = unwrap32(out[small] & np.uint64(0xFFFFFFFF), base)
        out[small] = np.uint64(base) + rel.astype(np.uint64)
    return out


def annotate(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add subflow/connection ids, the sender's MPTCP role, absolute DSN and data ACK per row.

    Works on one file or several (rows keep their `host`/`intf`); DSN inference runs per capture
    point, as Wireshark does per file. Returns (frames, connections table).
    """
    out = subflow_ids(df.reset_index(drop=True))
    conns, sub_conn = find_connections(out)
    n = len(out)
    sf = out["subflow"].to_numpy()
    syn = out["syn"].to_numpy()
    seq = out["seq"].to_numpy().astype(np.int64)
    from_init = out["from_initiator"].to_numpy()
    isn = pd.Series(seq[syn]).groupby([sf[syn], from_init[syn]]).first()
    # plain TCP (no MPTCP option anywhere on the subflow): a connection of its own whose
    # "DSN" is the TCP sequence number, so the same metrics compare TCP with MPTCP
    mp_sf = set(np.unique(sf[out["mp_subtypes"].notna().to_numpy()]).tolist())
    for s in np.unique(sf).tolist():
        if s in sub_conn or s in mp_sf:
            continue
        c = len(conns)
        i_isn, r_isn = isn.get((s, True)), isn.get((s, False))
        conns.append(
            Connection(
                c,
                0,
                None,
                None,
                None,
                None,
                None if i_isn is None else int(i_isn),
                None if r_isn is None else int(r_isn),
                kind="tcp",
            )
        )
        sub_conn[s] = (c, True)
    conn_of = np.full(n, -1, dtype=np.int64)
    client_init = np.zeros(n, dtype=bool)
    for s, (c, ci) in sub_conn.items():
        m = sf == s
        conn_of[m] = c
        client_init[m] = ci
    is_mp = conn_of >= 0
    from_client = np.where(from_init, client_init, ~client_init)
    out["conn"] = conn_of
    out["role"] = pd.Categorical.from_codes(
        np.where(~is_mp, 0, np.where(from_client, 1, 2)).astype(np.int8),
        categories=["", "client", "server"],
    )
    dsn = np.zeros(n, dtype=np.uint64)
    dsn_ok = np.zeros(n, dtype=bool)
    dack = np.zeros(n, dtype=np.uint64)
    dack_ok = np.zeros(n, dtype=bool)
    # subflows of connections we did not see start (no keys) still get DSNs when the mappings
    # carry 64-bit DSNs: they are grouped per subflow, with the initiator as "client"
    group_conn = np.where(is_mp, conn_of, -1 - sf)
    group_client = np.where(is_mp, from_client, from_init)
    needed = out[
        [
            "dss_ack",
            "dss_ack64",
            "dss_dsn",
            "dss_dsn64",
            "dss_ssn",
            "dss_dll",
            "mpc_dll",
            "payload_len",
        ]
    ]  # taking rows of 8 columns, not of all 60
    for (_file, c, client), idx in _groups(out, group_conn, group_client):
        cinfo = conns[c] if c >= 0 else None
        sender_idsn = peer_idsn = None
        if cinfo is not None:
            sender_idsn = cinfo.client_idsn if client else cinfo.server_idsn
            peer_idsn = cinfo.server_idsn if client else cinfo.client_idsn
        if cinfo is not None and cinfo.kind == "tcp":
            _tcp_as_dsn(out, idx, sender_idsn, peer_idsn, dsn, dsn_ok, dack, dack_ok)
            continue
        g = needed.iloc[idx]
        # data ACKs: acknowledge the peer's data
        has_ack = g["dss_ack"].notna().to_numpy().copy()
        if peer_idsn is None:  # 32-bit values cannot be expanded without the key
            has_ack &= g["dss_ack64"].to_numpy(dtype=bool, na_value=False)
        if has_ack.any():
            vals = g["dss_ack"].to_numpy(dtype=np.uint64, na_value=0)[has_ack]
            dack_ok[idx[has_ack]] = True
            dack[idx[has_ack]] = _expand(
                vals, g["dss_ack64"].to_numpy(dtype=bool, na_value=False)[has_ack], peer_idsn
            )
        has_map = g["dss_dsn"].notna().to_numpy().copy()
        if sender_idsn is None:
            has_map &= g["dss_dsn64"].to_numpy(dtype=bool, na_value=False)
        # v1 MP_CAPABLE with data: an implicit mapping of IDSN+1 at subflow seq 1
        has_mpc = g["mpc_dll"].notna().to_numpy() & (sender_idsn is not None)
        if not has_map.any() and not has_mpc.any():
            continue
        mvals = g["dss_dsn"].to_numpy(dtype=np.uint64, na_value=0)[has_map]
        m64 = g["dss_dsn64"].to_numpy(dtype=bool, na_value=False)[has_map]
        map_dsn = _expand(mvals, m64, sender_idsn)
        # per subflow: mapping intervals in relative subflow sequence space
        g_sf = sf[idx]
        g_fi = from_init[idx]
        g_seq = seq[idx]
        plen = g["payload_len"].to_numpy()
        m_ssn = g["dss_ssn"].to_numpy(dtype=np.int64, na_value=0)[has_map]
        m_dll = g["dss_dll"].to_numpy(dtype=np.int64, na_value=0)[has_map]
        m_sf = g_sf[has_map]
        if has_mpc.any():
            k = int(has_mpc.sum())
            map_dsn = np.concatenate([map_dsn, np.full(k, (sender_idsn + 1) % M64, np.uint64)])
            m_ssn = np.concatenate([m_ssn, np.ones(k, np.int64)])
            m_dll = np.concatenate(
                [m_dll, g["mpc_dll"].to_numpy(dtype=np.int64, na_value=0)[has_mpc]]
            )
            m_sf = np.concatenate([m_sf, g_sf[has_mpc]])
        for s in np.unique(g_sf):
            key = (s, bool(g_fi[g_sf == s][0]))
            if key not in isn.index:
                continue
            base = int(isn[key])
            rows = np.flatnonzero((g_sf == s) & (plen > 0))
            if len(rows) == 0:
                continue
            rel = (g_seq[rows] - base) % M32
            mm = m_sf == s
            starts, lens, dsns = m_ssn[mm], m_dll[mm], map_dsn[mm]
            order = np.argsort(starts, kind="stable")
            starts, lens, dsns = starts[order], lens[order], dsns[order]
            # the latest mapping with start <= rel (a re-sent mapping replaces an equal start)
            k = np.searchsorted(starts, rel, side="right") - 1
            ok = k >= 0
            kk = np.maximum(k, 0)
            ok &= rel < starts[kk] + np.maximum(lens[kk], 1)
            tgt = idx[rows[ok]]
            dsn[tgt] = dsns[kk[ok]] + (rel[ok] - starts[kk[ok]]).astype(np.uint64)
            dsn_ok[tgt] = True
    # relative subflow sequence number (tshark's tcp.seq): what DSS mappings count in
    isn_of = {(int(a) << 1) | int(b): int(v) for (a, b), v in isn.items()}
    base = pd.Series((sf.astype(np.int64) << 1) | from_init.astype(np.int64)).map(isn_of)
    has_isn = base.notna().to_numpy()
    rel = np.zeros(n, dtype=np.int64)
    rel[has_isn] = (seq[has_isn] - base.to_numpy()[has_isn].astype(np.int64)) % M32
    out["rel_seq"] = pd.arrays.IntegerArray(rel, ~has_isn)
    out["dsn"] = pd.arrays.IntegerArray(dsn, ~dsn_ok)
    out["data_ack"] = pd.arrays.IntegerArray(dack, ~dack_ok)
    # object dtype: keys, tokens and IDSNs are exact Python ints (uint64 and None do not mix)
    table = pd.DataFrame(
        [c.__dict__ for c in conns], columns=list(Connection.__dataclass_fields__), dtype=object
    )
    return out, table


def _tcp_as_dsn(
    out: pd.DataFrame,
    idx: np.ndarray,
    isn: int | None,
    peer_isn: int | None,
    dsn: np.ndarray,
    dsn_ok: np.ndarray,
    dack: np.ndarray,
    dack_ok: np.ndarray,
) -> None:
    """Plain TCP: sequence numbers unwrapped from the ISN (or the first one seen) stand in for
    DSNs, cumulative ACKs for DATA_ACKs; the first data byte is ISN+1, as with an IDSN."""
    seq = out["seq"].to_numpy()[idx].astype(np.int64)
    plen = out["payload_len"].to_numpy()[idx]
    data = plen > 0
    if data.any():
        base = int(isn) if isn is not None else int(seq[data][0]) - 1
        dsn[idx[data]] = np.uint64(base) + unwrap32(seq[data], base).astype(np.uint64)
        dsn_ok[idx[data]] = True
    ackf = out["ack_flag"].to_numpy()[idx]
    if ackf.any() and peer_isn is not None:
        ak = out["ack"].to_numpy()[idx][ackf].astype(np.int64)
        dack[idx[ackf]] = np.uint64(peer_isn) + unwrap32(ak, int(peer_isn)).astype(np.uint64)
        dack_ok[idx[ackf]] = True


def _groups(df: pd.DataFrame, conn_of: np.ndarray, from_client: np.ndarray):
    """Row positions per (capture file, connection, sender role), in time order."""
    if "host" in df.columns:  # one capture point = (host, interface), as integer codes
        fk = pd.factorize(df["host"])[0].astype(np.int64) * 65536 + pd.factorize(df["intf"])[
            0
        ].astype(np.int64)
    else:
        fk = np.zeros(len(df), dtype=np.int64)
    pos = pd.DataFrame({"f": fk, "c": conn_of, "cl": from_client, "t": df["time"].to_numpy()})
    pos = pos.sort_values("t", kind="stable")
    for key, g in pos.groupby(["f", "c", "cl"], sort=False):
        yield key, g.index.to_numpy()
