"""What one provider module gives the rest of walletwatch: one entry of the registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from walletwatch.schema import ProviderSchema
from walletwatch.types import ProviderFactory


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A provider's config contract, its client, the help of its gauges, its push answer."""

    schema: ProviderSchema
    factory: ProviderFactory
    # model.Gauge name -> the HELP text of its metric family.
    gauges: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # The body a push from this provider is answered with (walletwatch.push); None when the
    # provider sends none, so `push: true` is refused on its accounts.
    push_answer: str | None = None

    def __post_init__(self) -> None:
        """Keep the gauge help read-only, whatever the provider module passed."""
        object.__setattr__(self, "gauges", MappingProxyType(dict(self.gauges)))

    @property
    def name(self) -> str:
        """The name config.yaml's ``provider:`` key gives."""
        return self.schema.name
