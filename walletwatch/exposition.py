"""Sample values, label values and histograms written as the exposition writes them.

Byte for byte what prometheus_client's encoders write (``floatToGoString``, its label escaping),
without building its Metric and Sample objects.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Callable, Iterable

from prometheus_client.utils import floatToGoString

from walletwatch.escape import escaped as escaped_text
from walletwatch.families import Family
from walletwatch.telemetry import Histogram

go_float: Callable[[float], str] = floatToGoString  # typed here: the library's is not
_COUNTS = tuple(f"{n}.0" for n in range(1024))


class Escapes(dict[str, str]):
    """Label values escaped, each worked out once per render."""

    def __missing__(self, value: str) -> str:
        escaped = self[value] = escape_label(value)
        return escaped


LABEL_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
"""Characters a label value keeps as their escape text (``\\u0000``): lone surrogates, which
UTF-8 cannot encode, and control characters, which Prometheus' own parser may take a NUL of
for the end of its input. A newline has an escape of its own in the format."""


def escape_label(value: str) -> str:
    """A label value as the exposition writes it: backslash, newline and quote escaped, and
    lone surrogates and control characters as text (``\\ud800``, written ``\\\\ud800``)."""
    if value.isprintable() and "\\" not in value and '"' not in value:
        return value  # the usual case; a newline is not printable
    value = escaped_text(value, LABEL_UNSAFE)
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _exposition_errors(err: UnicodeError) -> tuple[str, int]:
    """A character UTF-8 cannot encode as its escape text, as a label value or HELP writes it.

    Label values are escaped before (``_escape``): this is for what nothing foresaw, so that
    one value never fails a scrape.
    """
    if not isinstance(err, UnicodeEncodeError):
        raise err
    bad = err.object[err.start : err.end]
    return "".join(f"\\\\u{ord(c):04x}" for c in bad), err.end


EXPOSITION_ERRORS = "walletwatch.exposition"
codecs.register_error(EXPOSITION_ERRORS, _exposition_errors)


def number(value: float) -> str:
    """A sample value as prometheus_client writes it (``floatToGoString``)."""
    value = float(value)
    # Below a million, finite floats are their repr; above, Go's exponent form (1e+06) and
    # the spellings of +Inf, -Inf and NaN take over.
    if -math.inf < value < 1e6:
        return repr(value)
    return go_float(value)


def count(value: int) -> str:
    """An integer sample value (a count, a flag) as prometheus_client writes it."""
    if 0 <= value < 1024:
        return _COUNTS[value]
    if -1_000_000 < value < 1_000_000:
        return f"{value:d}.0"
    return go_float(value)


def sorted_labels(labels: Iterable[tuple[str, str]]) -> str:
    """Escaped (name, value) pairs as the text between a sample's braces, sorted by name."""
    return ",".join(f'{name}="{value}"' for name, value in sorted(labels))


def histogram(family: Family, labels: dict[str, str], hist: Histogram) -> list[str]:
    """One histogram's _bucket lines, then its _count and _sum."""
    name, buckets = family.name, hist.buckets()
    lines = [
        f"{name}_bucket{{{sorted_labels([*labels.items(), ('le', le)])}}} {number(count)}\n"
        for le, count in buckets
    ]
    plain = sorted_labels(labels.items())
    lines.append(f"{name}_count{{{plain}}} {number(buckets[-1][1])}\n")
    lines.append(f"{name}_sum{{{plain}}} {number(hist.total)}\n")
    return lines
