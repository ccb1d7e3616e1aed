"""Split an account set over N instances the way Prometheus' ``hashmod`` relabelling does.

An account belongs to shard ``md5(name)[8:16] as a big-endian uint64 % N`` — Prometheus'
``relabel.HashMod`` exactly — so ``shard: "K/N"`` on N instances (K = 0..N-1) polls every
account once, and a ``hashmod`` rule on the ``account`` label gives the same split.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

_FORM = re.compile(r"(\d+)/(\d+)")


class Named(Protocol):
    """Anything with a name (an AccountConfig)."""

    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


@dataclass(frozen=True, slots=True)
class Shard:
    """This instance's part K of N."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, name: str) -> bool:
        """True if the account called ``name`` is this instance's to poll."""
        return hashmod(name, self.count) == self.index


def hashmod(value: str, modulus: int) -> int:
    """Prometheus' hashmod of ``value``: the md5's last 8 bytes, big-endian, mod ``modulus``."""
    digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % modulus


def parse_shard(value: object) -> Shard:
    """``"K/N"`` with 0 <= K < N; ValueError otherwise."""
    match = _FORM.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected 'K/N' (this instance's shard K of N), got {value!r}")
    index, count = int(match[1]), int(match[2])
    if not 0 <= index < count:
        raise ValueError(f"{value!r}: need 0 <= K < N")
    return Shard(index, count)


def select(items: Iterable[N], shard: Shard | None) -> tuple[N, ...]:
    """The items whose name belongs to ``shard`` (all of them when there is no shard)."""
    return tuple(item for item in items if shard is None or shard.owns(item.name))
