"""testbed/mptcp_genl.py (the mptcp_pm codec) and testbed/uspm.py's handover decisions, without
a kernel: bytes built and read back field by field, events as the kernel lays them out, and each
mode's commands for a scripted run of events. The live side is tests/testbed/test_uspm_live.py.
"""

from __future__ import annotations

import socket
import struct

import pytest

from experiments.campaign_report import handover_modes
from experiments.errors import ExperimentError
from experiments.stacks import STACKS
from testbed import mptcp_genl as g
from testbed.uspm import Handover

WIFI, LTE, SRV = "10.0.1.1", "10.0.2.1", "10.0.5.2"
ADDRS = [(WIFI, "client-eth0"), (LTE, "client-eth1")]


def _attrs(nested: bytes) -> dict[int, bytes]:
    return dict(g.parse_nlas(nested))


def test_subflow_create_lays_out_token_and_both_addresses():
    raw = g.subflow_create(
        28, 7, 0xDEADBEEF, g.Addr(LTE, flags=g.FLAG_BACKUP, ifindex=3), g.Addr(SRV, port=5201)
    )
    (msg,) = g.parse_messages(raw)
    assert (msg.type, msg.seq, msg.flags) == (28, 7, g.NLM_F_REQUEST | g.NLM_F_ACK)
    cmd, version, _ = struct.unpack_from("=BBH", msg.payload)
    assert (cmd, version) == (g.CMD["subflow_create"], 1)
    top = dict(g.parse_nlas(msg.payload[4:]))
    assert struct.unpack("=I", top[g.ATTR_TOKEN]) == (0xDEADBEEF,)
    local, remote = _attrs(top[g.ATTR_ADDR]), _attrs(top[g.ATTR_ADDR_REMOTE])
    assert struct.unpack("=H", local[g.ADDR_FAMILY]) == (socket.AF_INET,)
    assert local[g.ADDR_ADDR4] == socket.inet_aton(LTE)  # big-endian, as the kernel reads it
    assert struct.unpack("=I", local[g.ADDR_FLAGS]) == (g.FLAG_BACKUP,)
    assert struct.unpack("=i", local[g.ADDR_IF_IDX]) == (3,)
    assert g.ADDR_PORT not in local
    assert remote[g.ADDR_ADDR4] == socket.inet_aton(SRV)
    assert struct.unpack("=H", remote[g.ADDR_PORT]) == (5201,)  # host order (the kernel htons)


def test_ipv6_address_and_remove():
    raw = g.announce(28, 1, 5, g.Addr("fd00:0:2::1", id=3, flags=g.FLAG_SIGNAL))
    top = dict(g.parse_nlas(g.parse_messages(raw)[0].payload[4:]))
    addr = _attrs(top[g.ATTR_ADDR])
    assert struct.unpack("=H", addr[g.ADDR_FAMILY]) == (socket.AF_INET6,)
    assert addr[g.ADDR_ADDR6] == socket.inet_pton(socket.AF_INET6, "fd00:0:2::1")
    assert addr[g.ADDR_ID] == b"\x03"
    top = dict(g.parse_nlas(g.parse_messages(g.remove(28, 2, 5, 0))[0].payload[4:]))
    assert top[g.ATTR_LOC_ID] == b"\x00"


def _event(cmd: int, attrs: list[bytes]) -> g.Message:
    return g.Message(28, 0, 0, struct.pack("=BBH", cmd, 1, 0) + b"".join(attrs))


def test_event_decoded_in_pmmonitors_vocabulary():
    ev = g.parse_event(
        _event(
            10,
            [
                g.nla(1, struct.pack("=I", 0x8FA9B342)),
                g.nla(2, struct.pack("=H", socket.AF_INET)),
                g.nla(3, b"\x02"),
                g.nla(4, b"\x00"),
                g.nla(5, socket.inet_aton(LTE)),
                g.nla(7, socket.inet_aton(SRV)),
                g.nla(9, struct.pack("!H", 40001)),
                g.nla(10, struct.pack("!H", 5201)),
                g.nla(11, b"\x01"),
                g.nla(99, b"ignored"),
            ],
        )
    )
    assert ev == {
        "type": "sub_established",
        "token": "8fa9b342",
        "family": socket.AF_INET,
        "loc_id": 2,
        "rem_id": 0,
        "saddr": LTE,
        "daddr": SRV,
        "sport": 40001,
        "dport": 5201,
        "backup": 1,
    }
    assert g.parse_event(_event(42, [])) == {"type": "unknown", "code": 42}


def test_ack_with_extended_message_and_truncation_is_an_error():
    req = g.genl(28, 8, 9, [])
    text = g.nla(g.NLMSGERR_ATTR_MSG, b"invalid token\0")
    err = struct.pack("=i", -22) + req + text
    ack = g.parse_ack(g.Message(g.NLMSG_ERROR, g.NLM_F_ACK_TLVS, 9, err))
    assert ack == g.Ack(9, 22, "invalid token")
    assert g.parse_ack(g.Message(g.NLMSG_ERROR, 0, 3, struct.pack("=i", 0) + req)).errno == 0
    with pytest.raises(ValueError, match="beyond"):
        g.parse_nlas(struct.pack("=HH", 40, 1) + b"abcd")
    with pytest.raises(ValueError, match="beyond"):
        g.parse_messages(req[:-2])


# ---- the handover modes' decisions ------------------------------------------------------------


def _established(mgr: Handover) -> list:
    return mgr.on_event(
        {
            "type": "established",
            "token": "0000abcd",
            "saddr": WIFI,
            "sport": 40000,
            "daddr": SRV,
            "dport": 5201,
            "server_side": 0,
        }  # fmt: skip
    )


def _sub(kind: str, saddr: str, sport: int, loc_id: int = 0) -> dict:
    return {"type": kind, "token": "0000abcd", "saddr": saddr, "sport": sport,
            "daddr": SRV, "dport": 5201, "loc_id": loc_id}  # fmt: skip


def test_full_and_backup_open_the_lte_subflow_at_once():
    for mode, backup in (("full", False), ("backup", True)):
        mgr = Handover(mode, ADDRS)
        (cmd,) = _established(mgr)
        assert (cmd.name, cmd.saddr, cmd.daddr, cmd.dport, cmd.backup) == (
            "subflow_create", LTE, SRV, 5201, backup)  # fmt: skip
        assert mgr.on_event(_sub("sub_established", LTE, 40001, loc_id=1)) == []
        # wifi goes down with lte alive: its address removed at once (id 0: the initial one)
        (rm,) = mgr.on_link("client-eth0", up=False)
        assert (rm.name, rm.loc_id, rm.saddr) == ("remove", 0, WIFI)
        assert mgr.on_link("client-eth0", up=False) == []  # no change, nothing to do
        mgr.on_event(_sub("sub_closed", WIFI, 40000))
        (back,) = mgr.on_link("client-eth0", up=True)
        assert (back.name, back.saddr, back.backup) == ("subflow_create", WIFI, False)


def test_single_path_joins_only_when_wifi_is_lost_then_moves_back():
    mgr = Handover("single-path", ADDRS)
    assert _established(mgr) == []
    (cmd,) = mgr.on_link("client-eth0", up=False)
    assert (cmd.name, cmd.saddr, cmd.backup) == ("subflow_create", LTE, False)
    # the lost address is removed once the new subflow is up (REMOVE_ADDR needs a path)
    (rm,) = mgr.on_event(_sub("sub_established", LTE, 40001, loc_id=1))
    assert (rm.name, rm.loc_id) == ("remove", 0)
    mgr.on_event(_sub("sub_closed", WIFI, 40000))
    (again,) = mgr.on_link("client-eth0", up=True)
    assert (again.name, again.saddr) == ("subflow_create", WIFI)
    (rm,) = mgr.on_event(_sub("sub_established", WIFI, 40002, loc_id=2))
    assert (rm.name, rm.saddr, rm.loc_id) == ("remove", LTE, 1)


def test_single_path_joins_when_the_only_subflow_closes():
    mgr = Handover("single-path", ADDRS)
    _established(mgr)
    (cmd,) = mgr.on_event(_sub("sub_closed", WIFI, 40000))
    assert (cmd.name, cmd.saddr) == ("subflow_create", LTE)
    assert mgr.on_event({"type": "closed", "token": "0000abcd"}) == []
    assert mgr.conns == {}


def test_server_side_and_foreign_connections_are_left_alone():
    mgr = Handover("full", ADDRS)
    ev = {"type": "established", "token": "1", "saddr": WIFI, "sport": 1, "daddr": SRV,
          "dport": 2, "server_side": 1}  # fmt: skip
    assert mgr.on_event(ev) == []
    assert mgr.on_event({**ev, "server_side": 0, "saddr": "192.0.2.1"}) == []
    with pytest.raises(ValueError, match="mode"):
        Handover("sometimes", ADDRS)


# ---- the stack option -------------------------------------------------------------------------


def test_pm_option_is_checked_naming_the_field():
    stack = STACKS["kernel-mptcp"]
    eps = [{"host": "client", "link": "lte", "flags": ["subflow"]}]
    with pytest.raises(ExperimentError) as e:
        stack.validate_options(
            "x.toml", "stack.kernel-mptcp", {"pm": "userspace", "endpoints": eps}
        )
    assert e.value.field == "stack.kernel-mptcp.pm" and "userspace-full" in e.value.problem
    with pytest.raises(ExperimentError) as e:
        stack.validate_options("x.toml", "stack.kernel-mptcp", {"pm": "userspace-full"})
    assert e.value.field == "stack.kernel-mptcp.pm" and "endpoints list" in e.value.problem
    opts = stack.validate_options("x.toml", "s", {"pm": "userspace-backup", "endpoints": eps})
    assert opts["pm"] == "userspace-backup"
    assert stack.validate_options("x.toml", "s", {})["pm"] == "kernel"


def test_handover_claims_group_modes_by_stack():
    fams = handover_modes(
        [
            "kernel-mptcp-kernel",
            "kernel-mptcp-userspace-full",
            "kernel-mptcp-userspace-backup",
            "kernel-mptcp-userspace-single-path",
            "userspace-FullMptcp",
            "userspace-Backup",
            "userspace-SinglePathThenJoin",
        ]  # fmt: skip
    )
    assert fams == {
        "kernel-mptcp-userspace": {
            "full": "kernel-mptcp-userspace-full",
            "backup": "kernel-mptcp-userspace-backup",
            "single": "kernel-mptcp-userspace-single-path",
        },
        "userspace": {
            "full": "userspace-FullMptcp",
            "backup": "userspace-Backup",
            "single": "userspace-SinglePathThenJoin",
        },
    }
