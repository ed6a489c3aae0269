"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.emulators.stack import EmulatorStack


@pytest.fixture
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorStack]:
    """The provider emulators on loopback, no receipts posted back."""
    stack = EmulatorStack(tmp_path_factory.mktemp("emulators") / "emulators")
    stack.start()
    yield stack
    stack.stop()
