"""Loopback simulator of the provider APIs walletwatch polls, for tests and the demo."""

from walletwatch.sim.kredswallet_scenario import DEMO_KREDSWALLET_ACCOUNT
from walletwatch.sim.scenario import DEMO_SEED, DEMO_WESTWALLET_ACCOUNTS
from walletwatch.sim.server import Simulator, mount, provider_app, serve, start

__all__ = [
    "DEMO_KREDSWALLET_ACCOUNT",
    "DEMO_SEED",
    "DEMO_WESTWALLET_ACCOUNTS",
    "Simulator",
    "mount",
    "provider_app",
    "serve",
    "start",
]
