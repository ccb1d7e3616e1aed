"""Provider clients, registered by the name used in config.yaml's ``provider:`` key.

Adding a provider: one module here, one simulator module in walletwatch/sim/, its tests in
tests/providers/, and one line in REGISTRY.
"""

from __future__ import annotations

from collections.abc import Mapping

from walletwatch.providers.bitexbit import Bitexbit
from walletwatch.providers.kredswallet import KredsWallet
from walletwatch.providers.potwallet import PotWallet
from walletwatch.providers.sila import Sila
from walletwatch.providers.westwallet import WestWallet
from walletwatch.types import ProviderFactory

REGISTRY: Mapping[str, ProviderFactory] = {
    "westwallet": WestWallet,
    "kredswallet": KredsWallet,
    "potwallet": PotWallet,
    "sila": Sila,
    "bitexbit": Bitexbit,
}
