"""The simulator registry: which provider simulations the Simulator serves, by provider name.

A provider's simulator is a class built from a ``SimContext`` that serves its API and its
control endpoints (``ProviderSim``); subclassing ``ApiSim`` gives it the shared request
pipeline and control app. List it in ``SIMULATORS`` here, or ``register`` it from outside,
with the demo scenario it may have (``Scenario``). Every ``Simulator`` built afterwards
serves it under ``/<name>`` and ``/_sim/<name>``, and steps its scenario. A provider that
calls back when money moves gives its ``ApiSim`` a ``push_kind`` (``PushKind``, push.py) and
calls ``pushed``; the Simulator's ``pushes`` (a ``Pusher``) send those callbacks.
"""

from collections.abc import Callable

from walletwatch.sim.base import (
    ApiSim,
    Call,
    Caller,
    Endpoint,
    ProviderSim,
    Public,
    Refusal,
    Registration,
    Scenario,
    ScenarioFactory,
)
from walletwatch.sim.bitexbit import BitexbitSim
from walletwatch.sim.bitexbit_scenario import BitexbitScenario
from walletwatch.sim.common import SimContext
from walletwatch.sim.kredswallet import KredsWalletSim
from walletwatch.sim.kredswallet_scenario import DEMO_KREDSWALLET_ACCOUNT, KredsWalletScenario
from walletwatch.sim.potwallet import PotWalletSim
from walletwatch.sim.potwallet_scenario import PotWalletScenario
from walletwatch.sim.push import Backoff, Callback, Pusher, PushKind, Switches
from walletwatch.sim.server import DEMO_SEED, Simulator, mount, provider_app, serve, start
from walletwatch.sim.sila import SilaSim
from walletwatch.sim.sila_scenario import SilaScenario
from walletwatch.sim.westwallet import WestWalletSim
from walletwatch.sim.westwallet_scenario import DEMO_WESTWALLET_ACCOUNTS, WestWalletScenario

# In the order their demo scenarios are set up and stepped.
SIMULATORS: dict[str, Registration] = {
    "westwallet": Registration(WestWalletSim, WestWalletScenario),
    "kredswallet": Registration(KredsWalletSim, KredsWalletScenario),
    "potwallet": Registration(PotWalletSim, PotWalletScenario),
    "sila": Registration(SilaSim, SilaScenario),
    "bitexbit": Registration(BitexbitSim, BitexbitScenario),
}


def register(
    name: str,
    simulator: Callable[[SimContext], ProviderSim],
    scenario: ScenarioFactory | None = None,
) -> None:
    """Serve a provider's simulator (and step its scenario) in every Simulator built from now on."""
    if name in SIMULATORS:
        raise ValueError(f"a simulator is registered for {name!r}")
    SIMULATORS[name] = Registration(simulator, scenario)


def unregister(name: str) -> None:
    """Stop serving a provider's simulator in Simulators built from now on; KeyError if absent."""
    del SIMULATORS[name]


__all__ = [
    "DEMO_KREDSWALLET_ACCOUNT",
    "DEMO_SEED",
    "DEMO_WESTWALLET_ACCOUNTS",
    "SIMULATORS",
    "ApiSim",
    "Backoff",
    "Call",
    "Callback",
    "Caller",
    "Endpoint",
    "ProviderSim",
    "Public",
    "PushKind",
    "Pusher",
    "Refusal",
    "Registration",
    "Scenario",
    "ScenarioFactory",
    "SimContext",
    "Simulator",
    "Switches",
    "mount",
    "provider_app",
    "register",
    "serve",
    "start",
    "unregister",
]
