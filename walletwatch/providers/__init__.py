"""The provider registry: every provider by the name config.yaml's ``provider:`` key gives.

A provider module holds everything about its provider and ends with its ``PROVIDER`` (a
ProviderSpec: config schema, client, gauge help); PROVIDERS lists them, and the rest of
walletwatch reads them only from here. The views below follow PROVIDERS as it is, so a
provider added to it (a test's, say) is known everywhere at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from walletwatch.providers import bitexbit, kredswallet, potwallet, sila, westwallet
from walletwatch.providers.spec import ProviderSpec
from walletwatch.schema import ProviderSchema
from walletwatch.types import ProviderFactory

__all__ = ["PROVIDERS", "REGISTRY", "SCHEMAS", "ProviderSpec", "gauge_help"]

T = TypeVar("T")

PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        westwallet.PROVIDER,
        kredswallet.PROVIDER,
        potwallet.PROVIDER,
        sila.PROVIDER,
        bitexbit.PROVIDER,
    )
}
"""Every provider, in the order messages list them."""


class _View(Mapping[str, T]):
    """One part of each provider in PROVIDERS, by name, as PROVIDERS is when read."""

    def __init__(self, part: Callable[[ProviderSpec], T]) -> None:
        self._part = part

    def __getitem__(self, name: str) -> T:
        return self._part(PROVIDERS[name])

    def __iter__(self) -> Iterator[str]:
        return iter(PROVIDERS)

    def __len__(self) -> int:
        return len(PROVIDERS)


REGISTRY: Mapping[str, ProviderFactory] = _View(lambda spec: spec.factory)
"""The client of each provider."""

SCHEMAS: Mapping[str, ProviderSchema] = _View(lambda spec: spec.schema)
"""The config contract of each provider."""


def gauge_help(name: str) -> str:
    """The HELP text of the provider gauge called ``name`` (the name itself if none has one)."""
    for spec in PROVIDERS.values():
        if name in spec.gauges:
            return spec.gauges[name]
    return name
