"""grafana/walletwatch.json: importable anywhere, and every panel query has data.

The JSON checks keep the dashboard portable (a ``datasource`` variable instead of
``__inputs``, a fixed uid, the job/instance/provider/account variables) and readable (a unit
and a description on every panel). The query checks run every panel's PromQL, with the
variables substituted as Grafana would for "All", against the Prometheus of the end-to-end
stack, which scrapes a daemon polling the simulator.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from tests.monitoring.stack import Stack
from tests.monitoring.tools import DASHBOARD, GOLDEN, served_metrics, wait_for

VARIABLES = ("job", "instance", "provider", "account")
# Grafana's $__rate_interval is max(4 x scrape interval, step + scrape interval); the stack
# scrapes every second, so 15s spans enough samples for rate() without waiting long.
RATE_INTERVAL = "15s"
# Grafana unit ids the dashboard uses (a typo would silently show raw numbers).
GRAFANA_UNITS = frozenset({"none", "short", "s", "percentunit", "cpm", "ops", "reqps"})
DEADLINE = 60.0  # seconds a query gets to return data (rate() needs two samples in range)


def dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    """Every panel that draws something (rows only group them)."""
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL) of every panel query."""
    return [(f"{p['title']} {t['refId']}", t["expr"]) for p in panels() for t in p["targets"]]


def variables() -> dict[str, dict[str, Any]]:
    """The template variables by name."""
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def metric_labels() -> dict[str, set[str]]:
    """The label names of each metric's samples in the golden /metrics."""
    labels: dict[str, set[str]] = {}
    for line in GOLDEN.read_text().splitlines():
        match = re.match(r"(walletwatch_\w+)\{([^}]*)\}", line)
        if match:
            names = set(re.findall(r'(\w+)="', match[2]))
            labels.setdefault(match[1], set()).update(names)
    return labels


def substitute(expr: str) -> str:
    """The query Grafana sends with every variable at "All" (its allValue, ``.*``)."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name in VARIABLES:
        expr = expr.replace(f"${name}", ".*")
    assert "$" not in expr, expr
    return expr


class TestDashboardJson:
    """The dashboard's structure."""

    def test_datasource_variable_not_inputs(self) -> None:
        """A `datasource` variable of type datasource for Prometheus; no __inputs to fill in."""
        data = dashboard()
        assert "__inputs" not in data
        source = variables()["datasource"]
        assert (source["type"], source["query"]) == ("datasource", "prometheus")

    def test_fixed_uid(self) -> None:
        """A fixed uid, so links and provisioning survive a re-import."""
        assert dashboard()["uid"] == "walletwatch"

    def test_filter_variables(self) -> None:
        """job, instance, provider and account: multi-value query variables with All = .*."""
        found = variables()
        for name in VARIABLES:
            var = found[name]
            assert var["type"] == "query"
            assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert (var["multi"], var["includeAll"], var["allValue"]) == (True, True, ".*")
            assert var["definition"].startswith("label_values(")

    def test_every_panel_has_unit_and_description(self) -> None:
        """Every panel says what it shows and in which unit."""
        for panel in panels():
            assert panel["description"].strip(), panel["title"]
            unit = panel["fieldConfig"]["defaults"]["unit"]
            assert unit in GRAFANA_UNITS or unit.startswith("suffix:"), (panel["title"], unit)

    def test_every_query_uses_the_datasource_variable(self) -> None:
        """Panels and their queries point at ${datasource}, never at a fixed uid."""
        for panel in panels():
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], panel["title"]

    def test_rate_windows_use_rate_interval(self) -> None:
        """Every range selector (rate() and friends) is [$__rate_interval]."""
        for title, expr in queries():
            assert "rate(" in expr or "[" not in expr, title
            for window in re.findall(r"\[([^\]]*)\]", expr):
                assert window == "$__rate_interval", (title, expr)

    def test_queries_follow_the_variables(self) -> None:
        """Every selector filters by job and instance, and by provider/account where it has them."""
        labels = metric_labels()
        for title, expr in queries():
            selectors = re.findall(r"(walletwatch_\w+)\{([^}]*)\}", expr)
            assert selectors, title
            for metric, selector in selectors:
                wanted = {"job", "instance"} | ({"provider", "account"} & labels.get(metric, set()))
                for label in wanted:
                    assert f'{label}=~"${label}"' in selector, (title, metric, label)

    def test_only_served_metrics(self) -> None:
        """Every walletwatch metric a query uses is one walletwatch serves (the golden file)."""
        used = {name for _, expr in queries() for name in re.findall(r"\bwalletwatch_\w+", expr)}
        assert used <= served_metrics(), used - served_metrics()

    def test_panel_ids_unique(self) -> None:
        """Panel ids are unique (Grafana links and edits panels by id)."""
        ids = [p["id"] for p in dashboard()["panels"]]
        assert len(ids) == len(set(ids))

    def test_substitute(self) -> None:
        """Variables become .* and the rate interval a fixed window."""
        assert (
            substitute('rate(x{job=~"$job", account=~"$account"}[$__rate_interval])')
            == f'rate(x{{job=~".*", account=~".*"}}[{RATE_INTERVAL}])'
        )


def has_data(stack: Stack, expr: str) -> list[dict[str, Any]] | None:
    """The instant query's result when it has at least one series with a number, else None."""
    result: list[dict[str, Any]] = stack.prometheus("/api/v1/query", query=expr)["result"]
    numbers = [s for s in result if not math.isnan(float(s["value"][1]))]
    return result if numbers else None


class TestDashboardQueries:
    """Every panel query returns data from a Prometheus that scraped walletwatch."""

    @pytest.mark.parametrize(("panel", "expr"), queries(), ids=[q[0] for q in queries()])
    def test_panel_query_returns_data(self, stack: Stack, panel: str, expr: str) -> None:
        """The query, with the variables substituted, returns at least one series."""
        query = substitute(expr)
        wait_for(lambda: has_data(stack, query), f"data for {panel}: {query}", deadline=DEADLINE)

    @pytest.mark.parametrize("name", VARIABLES)
    def test_variable_query_returns_values(self, stack: Stack, name: str) -> None:
        """label_values(metric, label) of each variable finds at least one value."""
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", variables()[name]["definition"])
        assert match, variables()[name]["definition"]
        selector, label = substitute(match[1]), match[2]

        def values() -> set[str] | None:
            series = stack.prometheus("/api/v1/series", **{"match[]": selector})
            found = {s[label] for s in series if label in s}
            return found or None

        assert wait_for(values, f"values of ${name}", deadline=DEADLINE)
