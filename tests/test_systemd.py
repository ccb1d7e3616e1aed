"""The systemd unit agrees with the daemon: the command, notify, reload, credentials."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parent.parent / "systemd" / "walletwatch.service"
EXEC = "/opt/walletwatch/venv/bin/walletwatch"


def service() -> dict[str, list[str]]:
    """The [Service] section: every value of each key, in order (keys may repeat)."""
    section, out = "", dict[str, list[str]]()
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


class TestUnit:
    """What the unit promises, the daemon does."""

    def test_notify_reload_and_watchdog(self) -> None:
        """Type=notify with a watchdog; reload is SIGHUP; the command is `walletwatch run`."""
        unit = service()
        assert unit["Type"] == ["notify"]
        assert unit["WatchdogSec"]
        assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
        assert unit["ExecStart"] == [f"{EXEC} run -c /etc/walletwatch/config.yaml"]
        assert unit["DynamicUser"] == ["yes"]
        assert unit["StateDirectory"] == ["walletwatch"]

    def test_credentials_are_named_for_the_config(self) -> None:
        """Every LoadCredential= gives a NAME the config reads as {credential: NAME}."""
        names = [line.split(":", 1)[0] for line in service()["LoadCredential"]]
        assert names
        assert all(name.isidentifier() for name in names)

    @pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
    def test_verify(self, tmp_path: Path) -> None:
        """systemd-analyze verify accepts the unit (ExecStart pointed at this venv's binary)."""
        binary = Path(sys.executable).parent / "walletwatch"
        copy = tmp_path / "walletwatch.service"
        copy.write_text(UNIT.read_text().replace(EXEC, str(binary)))
        analyze = shutil.which("systemd-analyze")
        assert analyze is not None
        result = subprocess.run(
            [analyze, "verify", str(copy)], capture_output=True, text=True, check=False
        )
        assert (result.returncode, result.stdout + result.stderr) == (0, "")
