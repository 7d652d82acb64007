"""A VXLAN link between two SSH "machines" (namespaces with their own sshd), made and removed
through SshHost: the cross-machine link a topology over several machines would use."""

import pytest

from testbed.crosslink import CrossLink, End
from testbed.ssh import SshHost
from testkit.sshmachines import SSHD, SshMachines

pytestmark = [
    pytest.mark.net,
    pytest.mark.skipif(not SSHD.exists(), reason="openssh-server (./inv installs it)"),
]


def test_a_vxlan_link_between_two_machines(tmp_path):
    with SshMachines(tmp_path, ["a", "b"], links=[("under", "a", "b")]) as ms:
        hosts = {
            n: SshHost(n, m.mgmt, key_filename=str(ms.client_key), known_hosts=str(ms.known_hosts))
            for n, m in ms.machines.items()
        }
        try:
            a, b = hosts["a"], hosts["b"]
            with CrossLink(
                End(a, "vxa", "10.91.1.1", "10.95.0.1/24"),
                End(b, "vxb", "10.91.1.2", "10.95.0.2/24"),
                vni=4242,
            ):
                assert "vxlan id 4242" in a.run(["ip", "-d", "link", "show", "vxa"]).stdout
                # frames cross in UDP over the underlay: a TCP transfer through the link
                srv = b.start(["python3", "-c", SERVER], stdout=-1)
                srv.wait_for_line("ready", stream="stdout", timeout=10)
                res = a.run(["python3", "-c", CLIENT], timeout=60)
                assert res.stdout.strip() == str(2_000_000)
                srv.wait(10)
            for h, dev in ((a, "vxa"), (b, "vxb")):
                assert h.run(["ip", "link", "show", dev], check=False).returncode != 0
        finally:
            for h in hosts.values():
                h.close()


SERVER = """
import socket
s = socket.socket(); s.bind(("10.95.0.2", 7000)); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); n = 0
while (d := c.recv(65536)):
    n += len(d)
c.sendall(str(n).encode()); c.close()
"""
CLIENT = """
import socket
c = socket.create_connection(("10.95.0.2", 7000), timeout=20)
c.sendall(b"x" * 2_000_000); c.shutdown(socket.SHUT_WR); print(c.recv(100).decode())
"""
