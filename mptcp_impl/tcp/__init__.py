"""A sans-I/O TCP (RFC 9293) that knows nothing of MPTCP but offers hooks for it."""
