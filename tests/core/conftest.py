"""Fixtures shared by the core's tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from qargo_desktop.core.logs import forget_all_secrets


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what a test did to logging: handlers added, levels, secrets registered."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    libraries = {n: logging.getLogger(n).level for n in ("urllib3", "msal", "keyring")}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, library_level in libraries.items():
        logging.getLogger(name).setLevel(library_level)
    forget_all_secrets()
