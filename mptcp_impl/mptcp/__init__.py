"""The MPTCP layer (RFC 8684) above mptcp_impl.tcp; subflows are ordinary TCP connections."""
