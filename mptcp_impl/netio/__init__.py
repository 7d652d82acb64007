"""The packet I/O edge of the userspace TCP: packet sockets, kernel fencing, asyncio driver.

Everything here does I/O; the protocol logic lives in the sans-I/O core (mptcp_impl.tcp). The
edge receives our segments with an AF_PACKET socket filtered in the kernel by classic BPF,
keeps the kernel's own TCP from answering them (an nft table per process and a reserved port),
and sends either through a raw IP socket or as GSO super-packets on an AF_PACKET socket.
"""
