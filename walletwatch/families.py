"""The metric contract: every family walletwatch serves, with its name, type, help and labels.

A family is defined once here; the renderer (walletwatch.render) fills in its samples and the
collector (walletwatch.metrics) serves them in the order the tuples below give.
"""

from __future__ import annotations

from typing import Literal

P = "walletwatch_"
Kind = Literal["gauge", "counter", "histogram"]


class Labels:
    """The label names of a family, sorted: the order the exposition writes them in."""

    __slots__ = ("names", "template")

    def __init__(self, *names: str) -> None:
        if list(names) != sorted(names):
            raise ValueError(f"labels {names}: list them sorted, the order they are served in")
        self.names = names
        # ``template % escaped_values`` is the text between a sample's braces.
        self.template = ",".join(f'{name}="%s"' for name in names)


class Family:
    """One metric family as served: name, type, help text and labels, defined once."""

    __slots__ = ("_headers", "labels", "name", "names", "sample", "template")

    def __init__(self, name: str, kind: Kind, doc: str, labels: Labels | None = None) -> None:
        self.name = P + name
        self.labels = labels or Labels()
        self.sample = self.name + "_total" if kind == "counter" else self.name
        # One whole sample as a %-template: the escaped label values in order, the value.
        self.template = self.line(self.labels.template, "%s")
        # Every metric name in its lines (a histogram's samples have their own suffixes).
        suffixes = ("_bucket", "_count", "_sum") if kind == "histogram" else ("",)
        self.names = (self.name, *(self.sample + suffix for suffix in suffixes))
        text_doc = doc.replace("\\", r"\\").replace("\n", r"\n")
        om_doc = text_doc.replace('"', r"\"")
        # Text 0.0.4 names a counter by its sample (x_total), OpenMetrics by its family (x).
        self._headers = (
            f"# HELP {self.sample} {text_doc}\n# TYPE {self.sample} {kind}\n",
            f"# HELP {self.name} {om_doc}\n# TYPE {self.name} {kind}\n",
        )

    def header(self, openmetrics: bool) -> str:
        """The HELP and TYPE lines of the family in the chosen format."""
        return self._headers[openmetrics]

    def line(self, labels: str, value: str) -> str:
        """One sample: ``labels`` is ``self.labels.template`` filled in, ``value`` formatted."""
        return f"{self.sample}{{{labels}}} {value}\n" if labels else f"{self.sample} {value}\n"


ACCOUNT = Labels("account", "provider")
CURRENCY = Labels("account", "currency", "provider")
FLOW = Labels("account", "currency", "direction", "provider")
SETTLED_FLOW = Labels("account", "currency", "direction", "provider", "state")
ENDPOINT = Labels("account", "endpoint", "provider")
PROVIDER = Labels("provider")
SINK = Labels("sink")
BUCKET = Labels("bucket")

BALANCE = Family("balance", "gauge", "Available balance from the last successful poll.", CURRENCY)
PENDING = Family(
    "balance_pending", "gauge", "Pending balance, where the provider reports one.", CURRENCY
)
LOW = Family("balance_low_threshold", "gauge", "Configured low_balance threshold.", CURRENCY)
SETTLED = Family("transfers", "counter", "Transfers that reached a final state.", SETTLED_FLOW)
AMOUNT = Family(
    "transfer_amount",
    "counter",
    "Summed amounts of transfers that reached a final state.",
    SETTLED_FLOW,
)
CORRECTIONS = Family(
    "transfer_corrections",
    "counter",
    "Transfers counted in transfers_total that left the state or currency again.",
    SETTLED_FLOW,
)
CORRECTED = Family(
    "transfer_corrected_amount",
    "counter",
    "Amounts counted in transfer_amount_total taken back by reversals and amendments.",
    SETTLED_FLOW,
)
IN_FLIGHT = Family(
    "transfers_in_flight", "gauge", "Transfers pending or in an unknown state.", FLOW
)
STUCK = Family("transfers_stuck", "gauge", "Transfers in flight longer than their threshold.", FLOW)
OLDEST = Family(
    "transfer_oldest_in_flight_timestamp_seconds",
    "gauge",
    "Start of the oldest in-flight transfer.",
    FLOW,
)
THRESHOLD = Family(
    "transfer_stuck_threshold_seconds",
    "gauge",
    "Configured stuck threshold.",
    Labels("account", "direction", "provider"),
)
UP = Family(
    "up", "gauge", "1 if the last poll of every endpoint of the account succeeded.", ACCOUNT
)
LAST_SUCCESS = Family(
    "last_success_timestamp_seconds", "gauge", "Time of the last successful poll.", ENDPOINT
)
# Alert rules read the interval to tell stale data from a poll that is not yet due.
INTERVAL = Family("poll_interval_seconds", "gauge", "Configured poll interval.", ACCOUNT)
POLLS = Family("polls", "counter", "Polls started.", ENDPOINT)
POLL_ERRORS = Family(
    "poll_errors",
    "counter",
    "Polls that failed, by reason.",
    Labels("account", "endpoint", "provider", "reason"),
)
HTTP_REQUESTS = Family(
    "http_requests",
    "counter",
    "HTTP responses from providers (code 'error' when none).",
    Labels("code", "endpoint", "provider"),
)
HTTP_DURATION = Family(
    "http_request_duration_seconds",
    "histogram",
    "Provider request latency.",
    Labels("endpoint", "provider"),
)
RATE_LIMITED = Family("rate_limited", "counter", "HTTP 429 responses received.", PROVIDER)
SCHEDULER_DELAY = Family(
    "scheduler_delay_seconds",
    "histogram",
    "How late a poll started against its due time.",
    PROVIDER,
)
EVENTS = Family("events", "counter", "Alert events emitted.", Labels("event"))
STORE_ERRORS = Family("store_errors", "counter", "State commits that failed.", PROVIDER)
STATE_FILE_OK = Family(
    "state_file_ok", "gauge", "1 while the state file is the one walletwatch opened at start."
)
MALFORMED = Family(
    "malformed_records",
    "counter",
    "Records of provider answers set aside as malformed (a negative deposit, no id...).",
    ENDPOINT,
)
SKIPPED = Family(
    "skipped_records",
    "counter",
    "Records of provider answers skipped as not of the kind asked for (another transaction type).",
    ENDPOINT,
)
UNREPORTED = Family(
    "currency_unreported",
    "gauge",
    "1 for a currency of low_balance or currencies the last balance answer did not report.",
    CURRENCY,
)
BUILD_INFO = Family("build_info", "gauge", "walletwatch version.", Labels("version"))
LEADER = Family(
    "leader", "gauge", "1 on the replica that holds the lease and polls (always, on SQLite)."
)
OUTBOX_PENDING = Family(
    "outbox_pending",
    "gauge",
    "Events in the outbox not yet delivered (an Alertmanager sink adds the firing alerts its "
    "latest re-post could not deliver).",
    SINK,
)
DELIVERY_FAILURES = Family(
    "delivery_failures", "counter", "Failed attempts to deliver events.", SINK
)
EVENTS_PARKED = Family(
    "events_parked",
    "counter",
    "Events a sink refused for good (HTTP 4xx), set aside and skipped.",
    SINK,
)
BUCKET_RATE = Family(
    "bucket_rate",
    "gauge",
    "Requests per second the bucket paces at now (lowered after repeated 429s).",
    BUCKET,
)
BUCKET_MAX_RATE = Family(
    "bucket_max_rate",
    "gauge",
    "Requests per second the bucket paces at when unthrottled (limit less margin).",
    BUCKET,
)
BUCKET_REQUESTS = Family(
    "bucket_requests", "counter", "Request slots the bucket handed out.", BUCKET
)
BUCKET_WAIT = Family(
    "bucket_wait_seconds",
    "counter",
    "Seconds requests spent waiting for a slot of the bucket.",
    BUCKET,
)
BUCKET_RATE_LIMITED = Family(
    "bucket_rate_limited", "counter", "HTTP 429s charged to the bucket.", BUCKET
)
WEB_CONNECTIONS = Family("web_connections", "gauge", "Connections open to the web server.")
WEB_CONNECTIONS_LIMIT = Family(
    "web_connections_limit",
    "gauge",
    "Connections the web server keeps open at most (the open files limit less polling's reserve).",
)
WEB_CONNECTIONS_CLOSED = Family(
    "web_connections_closed",
    "counter",
    "Connections the web server closed itself: header_timeout, evicted (to make room), refused.",
    Labels("reason"),
)
WEB_ACCEPT_ERRORS = Family(
    "web_accept_errors", "counter", "Failed accept() calls (out of descriptors or memory)."
)
RELOAD_OK = Family(
    "config_last_reload_successful", "gauge", "1 if the last configuration reload succeeded."
)
RELOAD_TIME = Family(
    "config_last_reload_success_timestamp_seconds",
    "gauge",
    "Time of the last successful configuration (re)load.",
)
CLOCK_OFFSET = Family(
    "clock_offset_seconds",
    "gauge",
    "System wall clock less walletwatch's steady time: a step since start (restart adopts it).",
)

PUSH_HINTS = Family(
    "push_hints",
    "counter",
    "Pushes received: accepted (a poll scheduled), coalesced (into one due), refused.",
    Labels("account", "provider", "result"),
)
PUSH_CONNECTIONS = Family("push_connections", "gauge", "Connections open to the push listener.")
PUSH_CONNECTIONS_LIMIT = Family(
    "push_connections_limit", "gauge", "Connections the push listener keeps open at most."
)
PUSH_CONNECTIONS_CLOSED = Family(
    "push_connections_closed",
    "counter",
    "Connections the push listener closed itself: header_timeout, body_timeout, evicted, refused.",
    Labels("reason"),
)
PUSH_ACCEPT_ERRORS = Family(
    "push_accept_errors", "counter", "Failed accept() calls of the push listener."
)

# The order the families are served in: those made from the watchers (with the provider
# gauges, sorted by name, after ACCOUNT_FAMILIES), then walletwatch's own.
ACCOUNT_FAMILIES = (
    *(BALANCE, PENDING, LOW, SETTLED, AMOUNT, CORRECTIONS, CORRECTED),
    *(IN_FLIGHT, STUCK, OLDEST, THRESHOLD),
)
HEALTH_FAMILIES = (UP, LAST_SUCCESS, INTERVAL)
TELEMETRY_FAMILIES = (
    *(POLLS, POLL_ERRORS, HTTP_REQUESTS, HTTP_DURATION, RATE_LIMITED, SCHEDULER_DELAY),
    *(EVENTS, STORE_ERRORS, STATE_FILE_OK, MALFORMED, SKIPPED, UNREPORTED, BUILD_INFO, LEADER),
    *(OUTBOX_PENDING, DELIVERY_FAILURES, EVENTS_PARKED),
    *(BUCKET_RATE, BUCKET_MAX_RATE, BUCKET_REQUESTS, BUCKET_WAIT, BUCKET_RATE_LIMITED),
    *(WEB_CONNECTIONS, WEB_CONNECTIONS_LIMIT, WEB_CONNECTIONS_CLOSED, WEB_ACCEPT_ERRORS),
)
DAEMON_FAMILIES = (
    *(BUILD_INFO, LEADER, STATE_FILE_OK),
    *(WEB_CONNECTIONS, WEB_CONNECTIONS_LIMIT, WEB_CONNECTIONS_CLOSED, WEB_ACCEPT_ERRORS),
)
"""The TELEMETRY_FAMILIES a follower serves too: the process's own, none about polling.

The rest (and the account and health families) describe the leader's work: a follower
serves their HELP and TYPE with no samples, so no rule sees an account twice.
"""
WEB_CLOSE_REASONS = ("evicted", "header_timeout", "refused")
"""The reasons of web_connections_closed_total: each is served from the start, at 0."""
RELOAD_FAMILIES = (RELOAD_OK, RELOAD_TIME)
PUSH_FAMILIES = (
    *(PUSH_HINTS, PUSH_CONNECTIONS, PUSH_CONNECTIONS_LIMIT, PUSH_CONNECTIONS_CLOSED),
    PUSH_ACCEPT_ERRORS,
)
"""Served when a push section is configured, after the others."""
PUSH_CLOSE_REASONS = ("body_timeout", *WEB_CLOSE_REASONS)
"""The reasons of push_connections_closed_total: each is served from the start, at 0."""
