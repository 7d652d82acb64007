"""Tokens identify an MPTCP connection to MP_JOIN SYNs: unique per host (Linux's token.c)."""

from __future__ import annotations

import random
from typing import Any

from .crypto import token as key_token
from .mib import Mib


class TokenRegistry:
    """Connections by local token, plus what every connection of one stack shares: the MIB
    counters (Linux keeps them per network namespace) and the random source for keys and
    nonces (seedable, so runs can be repeated)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.SystemRandom()
        self.mib = Mib()
        self._conns: dict[int, Any] = {}

    def new_key(self) -> tuple[int, int]:
        """A fresh 64-bit key whose token no live connection of this host uses."""
        while True:
            key = self.rng.getrandbits(64)
            if key == 0:
                continue
            tok = key_token(key)
            if tok not in self._conns:
                return key, tok

    def add(self, tok: int, conn: Any) -> None:
        self._conns[tok] = conn

    def remove(self, tok: int, conn: Any) -> None:
        if self._conns.get(tok) is conn:
            del self._conns[tok]

    def get(self, tok: int) -> Any | None:
        return self._conns.get(tok)

    def __len__(self) -> int:
        return len(self._conns)
