"""Text that cannot be stored, rendered or logged as given, kept as escaped text instead.

A JSON text may spell a lone UTF-16 surrogate (``"\\ud800"``), which Python decodes into a
str that UTF-8 cannot encode: SQLite, the /metrics body and a log file would each refuse it.
Control characters encode, but a NUL ends a Prometheus label value early and an escape
character rewrites a terminal. Each such character is kept as the six characters of its JSON
escape (``\\ud800``, ``\\u0000``), so the value still says what the provider sent.

Escaped text is not told apart from the same six characters sent as they are: a provider
that sends both ``"\\ud800"`` and ``"\\\\ud800"`` as ids sends one id twice.
"""

from __future__ import annotations

import re
from typing import Any

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""Lone surrogates and control characters (C0, DEL, C1)."""

SURROGATES = re.compile("[\ud800-\udfff]")
"""Lone surrogates alone: what UTF-8 cannot encode (JSON and SQLite carry the rest)."""

_RAW_ESCAPE = re.compile(rb"\\(?:[bfnrt]|u(?:[dD][89a-fA-F]|00[01]|007[fF]|00[89]))")
"""A JSON escape that decodes to a surrogate or a control character. It may also match inside
an escaped backslash (``\\\\n``): that only costs a walk that finds nothing."""

_RAW_C1 = re.compile(rb"\xc2[\x80-\x9f]")
"""A C1 control character in UTF-8."""


def escaped(text: str, unsafe: re.Pattern[str] = UNSAFE) -> str:
    """``text`` with each character ``unsafe`` matches as its JSON escape (``\\ud800``)."""
    if unsafe.search(text) is None:
        return text
    return unsafe.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def cleaned(value: Any, unsafe: re.Pattern[str] = UNSAFE) -> Any:
    """A JSON-ready value with every string in it, keys too, ``escaped``.

    Lists and dicts are changed in place (the caller made them); a tuple becomes a list, as
    JSON writes both. The walk keeps its own stack: a document as deep as the decoder allows
    is no deeper here.
    """
    if isinstance(value, str):
        return escaped(value, unsafe)
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list | dict):
        return value
    stack: list[list[Any] | dict[Any, Any]] = [value]
    while stack:
        node = stack.pop()
        slots: Any
        if isinstance(node, dict):
            if any(isinstance(key, str) and unsafe.search(key) for key in node):
                pairs = list(node.items())
                node.clear()
                for key, item in pairs:
                    node[escaped(key, unsafe) if isinstance(key, str) else key] = item
            slots = list(node.items())
        else:
            slots = enumerate(node)
        for slot, item in slots:
            if isinstance(item, str):
                if unsafe.search(item) is not None:
                    node[slot] = unsafe.sub(_escape, item)
            elif isinstance(item, tuple):
                node[slot] = rebuilt = list(item)
                stack.append(rebuilt)
            elif isinstance(item, list | dict):
                stack.append(item)
    return value


def may_hold_unsafe(raw: bytes) -> bool:
    """Whether the JSON text ``raw`` may decode to a string with an unsafe character.

    Only an escape can spell a surrogate or a C0 character (valid UTF-8 holds no surrogates,
    JSON forbids raw C0 characters in strings); DEL and C1 may also come raw. Each ``in`` is
    a memchr: under a microsecond for a 12 KB answer, where a regex for all of it took 30.
    """
    return (
        (b"\\" in raw and _RAW_ESCAPE.search(raw) is not None)
        or b"\x7f" in raw
        or (b"\xc2" in raw and _RAW_C1.search(raw) is not None)
    )
