"""The built-in demo: its config (walletwatch/demo.yaml), and the simulator accounts it names.

``walletwatch demo`` points the config at its simulator, and the simulator's push sender at
the demo's push listener; ``walletwatch simulate`` prints the accounts, and the simulator's
``/`` page lists them, so a config can be written against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import yaml

from walletwatch.config import Config, Listen, parse_config


def demo_yaml(sim_url: str, listen: Listen) -> Any:
    """walletwatch/demo.yaml as loaded YAML, pointed at ``sim_url`` and listening on ``listen``."""
    text = resources.files("walletwatch").joinpath("demo.yaml").read_text()
    host = f"[{listen.host}]" if ":" in listen.host else listen.host
    text = text.replace("PUSH_LISTEN", f"{host}:0")  # a free port beside listen's
    return yaml.safe_load(
        text.replace("SIM_URL", sim_url).replace("LISTEN", f"{host}:{listen.port}")
    )


def demo_config(sim_url: str, listen: Listen, workdir: Path) -> Config:
    """The built-in demo config pointed at a simulator."""
    return parse_config(demo_yaml(sim_url, listen), base_dir=workdir, environ={})


def simulator_accounts(url: str) -> str:
    """Per account of the simulator at ``url``: its provider, base_url and credentials."""
    lines = ["accounts it knows (examples/simulator.yaml is a config of them all):"]
    for account in demo_yaml(url, Listen("127.0.0.1", 0))["accounts"]:
        credentials = " ".join(f"{k}={v}" for k, v in account["credentials"].items())
        auth = f" auth={account['auth']}" if "auth" in account else ""
        lines.append(
            f"  {account['provider']:<12} {account['name']:<16} base_url={account['base_url']}"
            f"{auth} {credentials}"
        )
    return "\n".join(lines)


def simulator_banner(url: str) -> str:
    """Where the simulator listens, and per account the base_url and credentials it takes."""
    return f"simulator listening on {url}\n{simulator_accounts(url)}"


class Receiver(Protocol):
    """The daemon's push receiver, as far as the demo needs it."""

    @property
    def url(self) -> str:
        """Its base URL."""
        ...


class PushSender(Protocol):
    """What the demo needs of the simulator: sending an account's pushes to a URL."""

    def subscribe_account(self, provider: str, credentials: Mapping[str, str], url: str) -> None:
        """Send the pushes of the account these credentials open to ``url``."""
        ...


def subscribe_pushes(sender: PushSender, config: Config, receiver: Receiver | None) -> int:
    """Point every ``push: true`` account's callbacks at ``receiver``; how many there are."""
    if config.push is None or receiver is None:
        return 0
    token = config.push.token.reveal()
    accounts = [account for account in config.accounts if account.push]
    for account in accounts:
        credentials = {key: secret.reveal() for key, secret in account.credentials.items()}
        sender.subscribe_account(
            account.provider, credentials, f"{receiver.url}/push/{account.name}/{token}"
        )
    return len(accounts)
