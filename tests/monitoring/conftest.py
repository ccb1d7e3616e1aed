"""The monitoring stack, started once for the end-to-end and dashboard tests of this package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.monitoring.stack import Stack, running_stack


@pytest.fixture(name="stack", scope="package")
def fixture_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Simulator, daemon, Prometheus and Alertmanager on loopback, stopped after this package."""
    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack
