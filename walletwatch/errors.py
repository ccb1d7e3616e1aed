"""The one exception tree of walletwatch.

::

    WalletwatchError
    ├── ConfigError                 the configuration is unusable; carries every problem
    ├── StartupError                this host cannot run it as configured (address, paths)
    ├── StatusUnavailable           ``walletwatch status`` could not read a daemon's API
    ├── StoreError                  the state database cannot be read or written
    │   ├── StateLocked             another running walletwatch holds the state file
    │   ├── StateDamaged            the state file is damaged, foreign or too new
    │   └── StateFileLost           the state file was removed or replaced under the daemon
    └── ProviderError               a poll failed; ``reason`` is the poll_errors_total label
        ├── Unavailable             timeout, connection, http_5xx: try again later
        ├── RateLimited             HTTP 429; ``retry_after`` seconds when the provider said
        ├── AuthFailed              HTTP 401/403 or a body-level auth error
        ├── Rejected                any other 4xx or body-level refusal
        ├── BadPayload              the answer could not be understood
        └── Internal                walletwatch itself failed (a bug, or input nothing foresaw)

A poll whose answer could not be committed fails as ``Unavailable(reason="store")``.

Raise these and chain with ``raise ... from err``; never return ``None`` to mean failure.
Messages never contain credentials.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret in it replaced by ``***``, longest first."""
    # Longest first: a short secret inside a longer one (a token inside a URL) must not be
    # replaced first, or the rest of the longer one would stay visible.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class WalletwatchError(Exception):
    """Base class of every error walletwatch raises on purpose."""


class ConfigError(WalletwatchError):
    """The configuration has problems; ``problems`` lists each as ``path: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class StartupError(WalletwatchError):
    """This host cannot run the config: an address in use, a directory that is missing.

    The message is one line naming the address or path and what to do about it.
    """


class StatusUnavailable(WalletwatchError):
    """A running daemon's API could not be read: unreachable, refused, or not its answer.

    The message is one line saying which; it never holds the password or the answer's body.
    """


class StoreError(WalletwatchError):
    """The state database cannot be read or written."""


class StateDamaged(StoreError):
    """The state file is damaged, not walletwatch's, or from a newer walletwatch."""


class StateLocked(StoreError):
    """Another running walletwatch holds the state file."""


class StateFileLost(StoreError):
    """The state file was removed or replaced under the running daemon."""


class ProviderError(WalletwatchError):
    """A request to a provider did not give a usable answer."""

    reason = "http_4xx"


class Unavailable(ProviderError):
    """The provider could not be reached or failed on its side."""

    def __init__(self, message: str, *, reason: str = "connection") -> None:
        super().__init__(message)
        self.reason = reason


class RateLimited(ProviderError):
    """The provider answered HTTP 429."""

    reason = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthFailed(ProviderError):
    """The provider refused the credentials."""

    reason = "auth"


class Rejected(ProviderError):
    """The provider refused the request for a reason other than auth or rate."""

    reason = "http_4xx"


class BadPayload(ProviderError):
    """The provider answered with something that is not what its API promises."""

    reason = "bad_payload"


class Internal(ProviderError):
    """A poll raised what nothing maps to an outcome: a bug, or input nothing foresaw."""

    reason = "internal"


POLL_ERROR_REASONS = (
    "timeout",
    "connection",
    "http_4xx",
    "http_5xx",
    "rate_limited",
    "auth",
    "bad_payload",
    "internal",
    "store",
)


class NotLeading(WalletwatchError):
    """This replica follows: it watches no account, so it cannot say how they are."""


class BadParameter(WalletwatchError):
    """A query parameter of the operator API has a value it cannot take."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
