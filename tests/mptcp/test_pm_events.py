"""Path-manager events (Linux's userspace-PM vocabulary) in the two-host simulation: both
sides of a connection with a join, an announced address and a priority change, in order."""

from __future__ import annotations

from mptcp_impl.mptcp.ctrl import Endpoint, Limits, MptcpConfig
from testkit.mptcp_sim import C1, C2, Net, S

S2 = "10.0.6.2"


def drain(conn) -> list[dict]:
    return [e.as_dict() for e in iter(conn.next_pm_event, None)]


def test_pm_events_both_sides():
    net = Net(4)
    client = net.host("client", [C1, C2], seed=31)
    scfg = MptcpConfig(endpoints=[Endpoint(S2, frozenset({"signal"}), 5)])
    server = net.host("server", [S, S2], seed=32, listen_port=5001, config=scfg)
    net.path(C1, S, delay=0.01)
    net.path(C2, S, delay=0.02)
    net.path(C1, S2, delay=0.02)
    net.path(C2, S2, delay=0.02)
    cfg = MptcpConfig(
        endpoints=[Endpoint(C2, frozenset({"subflow"}), 1)],
        limits=Limits(subflows=2, add_addr_accepted=1),
    )
    conn = net.connect(client, C1, (S, 5001), cfg)
    net.run(1.0, stop=lambda: conn._connected)
    conn.send(bytes(200_000))
    net.flush(client, conn)
    net.run(1.0)
    srv = server.accepted[0]
    sub2 = next(s for s in conn.subflows if s.local[0] == C2)
    assert conn.set_backup(sub2, True, net.now)
    net.flush(client, conn)
    net.run(0.5)
    ev = drain(conn)
    kinds = [e["type"] for e in ev]
    assert kinds[0] == "created" and "established" in kinds, kinds
    (ann,) = [e for e in ev if e["type"] == "announced"]
    assert ann["daddr"] == S2 and ann["rem_id"] == 5
    subs = [e for e in ev if e["type"] == "sub_established"]
    assert {(e["saddr"], e["daddr"]) for e in subs} == {(C2, S), (C1, S2)}
    (prio,) = [e for e in ev if e["type"] == "priority"]
    assert prio["local"] and prio["backup"] == 1 and prio["saddr"] == C2
    assert len({e["token"] for e in ev}) == 1
    sev = drain(srv)
    skinds = [e["type"] for e in sev]
    assert skinds[:2] == ["created", "established"], skinds
    assert [e for e in sev if e["type"] == "priority"][0]["local"] is False
    assert sum(1 for k in skinds if k == "sub_established") == 2
    # the client goes away: closed on both
    conn.abort(net.now)
    net.flush(client, conn)
    net.run(1.0)
    assert drain(conn)[-1]["type"] in ("closed", "sub_closed")
    assert "closed" in [e["type"] for e in drain(srv)]
