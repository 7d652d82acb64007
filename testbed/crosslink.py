"""A link between two machines for a topology larger than one machine: a VXLAN interface on each
end, over UDP between their underlay addresses, made and removed through the Host interface.

The piece a multi-machine backend would join nodes with (README "Scaling out": why not Mininet's
cluster mode). Unlike cluster mode's SSH Ethernet tunnels it carries frames in UDP, so nothing
retransmits or reorders beneath the emulated link, and it is removed exactly (the interfaces it
made, by name, on the machines it made them on). Placing topology nodes on machines is not
written yet; this is tested between two SSH "machines" (namespaces with their own sshd).
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed.host import Host


@dataclass
class End:
    host: Host
    dev: str  # the VXLAN interface made here
    underlay: str  # this machine's address the UDP packets leave from
    addr: str | None = None  # an address with prefix for the link, if any


class CrossLink:
    """`with CrossLink(End(a, "vx0", "192.0.2.1", "10.9.0.1/24"), End(b, ...), vni=42):`"""

    def __init__(self, a: End, b: End, *, vni: int, port: int = 4789, mtu: int = 1450):
        if not 0 < vni < 2**24:
            raise ValueError(f"VXLAN id must be 1..16777215, got {vni}")
        self.ends = (a, b)
        self.vni, self.port, self.mtu = vni, port, mtu
        self.made: list[End] = []

    def __enter__(self) -> CrossLink:
        try:
            for here, there in (self.ends, self.ends[::-1]):
                batch = [
                    f"link add {here.dev} type vxlan id {self.vni} local {here.underlay} "
                    f"remote {there.underlay} dstport {self.port} nolearning",
                ]
                self.made.append(here)
                batch.append(f"link set {here.dev} mtu {self.mtu}")
                if here.addr:
                    batch.append(f"addr add {here.addr} dev {here.dev}")
                batch.append(f"link set {here.dev} up")
                here.host.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for end in self.made:
            end.host.run(["ip", "link", "del", end.dev], check=False)
        self.made.clear()
