"""The rtnetlink address watch: crafted messages in, (address, up) changes out; and a real
netlink socket in a scratch network namespace (root only)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mptcp_impl.netio import ifwatch as W


def nlmsg(kind: int, body: bytes) -> bytes:
    m = struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body
    return m + bytes(-len(m) % 4)


def link(index: int, up: bool, kind: int = W.RTM_NEWLINK) -> bytes:
    flags = W.IFF_UP | W.IFF_RUNNING if up else 0
    return nlmsg(kind, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, 0))


def addr(index: int, a: str, kind: int = W.RTM_NEWADDR) -> bytes:
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    raw = socket.inet_pton(fam, a)
    attr = struct.pack(
        "=HH", 4 + len(raw), W.IFA_ADDRESS if fam == socket.AF_INET6 else W.IFA_LOCAL
    )
    return nlmsg(kind, struct.pack("=BBBBI", fam, 24, 0, 0, index) + attr + raw)


def bare_watch() -> tuple[W.InterfaceWatch, list]:
    got: list = []
    w = object.__new__(W.InterfaceWatch)
    w.callback = lambda a, up: got.append((a, up))
    w.addrs, w.link_up = {}, {}
    return w, got


def test_changes_of_links_and_addresses():
    w, got = bare_watch()
    # the initial dump: state only
    assert w._parse(link(2, True) + addr(2, "10.0.1.1") + nlmsg(W.NLMSG_DONE, b""), False)
    assert got == [] and w.up_addresses() == {"10.0.1.1"}
    w._parse(link(2, False), True)  # interface down: its addresses go
    w._parse(link(2, False), True)  # no change: nothing
    w._parse(link(2, True) + addr(3, "10.0.2.1"), True)
    w._parse(addr(3, "10.0.2.1", W.RTM_DELADDR), True)
    w._parse(addr(2, "fd00::1") + addr(2, "fe80::1"), True)  # link-local: not a subflow's
    assert got == [
        ("10.0.1.1", False),
        ("10.0.1.1", True),
        ("10.0.2.1", True),
        ("10.0.2.1", False),
        ("fd00::1", True),
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")
def test_real_netlink_in_a_namespace():
    """`ip link set dev X down/up` in a scratch namespace gives the two events."""
    ns = f"ifw{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        cmds = [
            "ip link add ifwa type veth peer name ifwb",
            "ip addr add 10.99.0.1/24 dev ifwa",
            "ip link set ifwa up",
            "ip link set ifwb up",
        ]
        for c in cmds:
            subprocess.run(["ip", "netns", "exec", ns, *c.split()], check=True)
        code = (
            "import asyncio, subprocess\n"
            "from mptcp_impl.netio.ifwatch import InterfaceWatch\n"
            "async def main():\n"
            "    got = []\n"
            "    w = InterfaceWatch(asyncio.get_running_loop(), lambda a, u: got.append((a, u)))\n"
            "    assert '10.99.0.1' in w.up_addresses(), w.addrs\n"
            "    for s in ('down', 'up'):\n"
            "        subprocess.run(['ip', 'link', 'set', 'ifwa', s], check=True)\n"
            "        for _ in range(100):\n"
            "            await asyncio.sleep(0.02)\n"
            "            if len(got) == (1 if s == 'down' else 2):\n"
            "                break\n"
            "    w.close()\n"
            "    print(got)\n"
            "asyncio.run(main())\n"
        )
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[('10.99.0.1', False), ('10.99.0.1', True)]"
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
