"""The multipath testbed: Mininet hosts and routers, link emulation, capture, events, teardown.

Depends on nothing else in this repository; experiments/ and tests build on it.
"""
