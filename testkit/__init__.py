"""Peers and capture builders that the tests and the benchmarks share.

Dependency direction: tests/ and benchmarks/ import testkit; testkit may import the product
packages (testbed, analysis, mptcp_impl); no product package imports testkit or tests/.
"""
