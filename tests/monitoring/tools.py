"""Helpers for the monitoring tests: Prometheus tools, loopback HTTP, waiting on a deadline."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "grafana" / "walletwatch.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
README = ROOT / "README.md"
GOLDEN = Path(__file__).parent / "golden" / "metrics.txt"

T = TypeVar("T")


def tool(name: str) -> str:
    """The path of a Prometheus tool; the test fails (never skips) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: `make test` installs it (make tools: Debian packages "
            "prometheus and prometheus-alertmanager)"
        )
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool with arguments and optional standard input."""
    return subprocess.run(
        [tool("promtool"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of prometheus/alerts.yml."""
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def served_metrics() -> set[str]:
    """Every metric name in the golden /metrics, with a histogram's _bucket, _sum and _count."""
    names: set[str] = set()
    for line in GOLDEN.read_text().splitlines():
        match = re.match(r"# TYPE (\S+) (\S+)", line)
        if match:
            name, kind = match[1], match[2]
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_text(url: str, timeout: float = 5.0) -> str:
    """GET a loopback URL and return the body (HTTPError for a non-2xx answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return str(resp.read().decode())
    except urllib.error.HTTPError as err:
        err.close()  # it holds the connection; left to the GC it warns (warnings are errors)
        raise


def get_json(url: str, **params: str) -> Any:
    """GET a loopback URL with query parameters and decode its JSON body."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    return json.loads(get_text(url))


def post_json(url: str, body: object) -> Any:
    """POST a JSON body to a loopback URL and decode the JSON answer."""
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read().decode())


def wait_for(probe: Callable[[], T | None], what: str, deadline: float = 60.0) -> T:
    """Call probe every 0.2 s until it returns something other than None (or fail at deadline).

    Waiting on real Prometheus, Alertmanager and daemon processes is real time: there is no
    clock to fake. Connection errors count as "not yet".
    """
    end = time.monotonic() + deadline
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
        except (OSError, urllib.error.URLError, ValueError) as err:
            result, last_error = None, err
        if result is not None:
            return result
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline:.0f}s waiting for {what} ({last_error})")
        time.sleep(0.2)
