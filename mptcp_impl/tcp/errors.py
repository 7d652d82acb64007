"""Errors raised by the TCP wire codecs."""

from __future__ import annotations


class MalformedSegment(ValueError):
    """A segment or option that cannot be parsed; the connection counts and drops these."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
