"""Keyring backends for the token cache tests: in memory, failing, plaintext-like, forgetful."""

from __future__ import annotations

from keyring.backend import KeyringBackend
from keyring.errors import KeyringError

from tests.memory_keyring import MemoryKeyring

__all__ = [
    "BrokenKeyring",
    "ForgetfulKeyring",
    "LowPriorityKeyring",
    "MemoryKeyring",
    "PlaintextKeyring",
    "preloaded",
]


def preloaded(secrets: dict[tuple[str, str], str]) -> MemoryKeyring:
    """A memory keyring that already holds ``secrets`` (for child processes)."""
    backend = MemoryKeyring()
    backend.secrets.update(secrets)
    return backend


class PlaintextKeyring(MemoryKeyring):
    """Named like keyrings.alt's plaintext backend: must be refused by name."""

    priority = 1


class LowPriorityKeyring(MemoryKeyring):
    """A backend keyring itself does not recommend (priority below 1)."""

    priority = 0.5  # type: ignore[assignment]


class BrokenKeyring(KeyringBackend):
    """Every call fails, as a locked or absent Secret Service does."""

    priority = 1

    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringError("the collection is locked")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise KeyringError("the collection is locked")

    def delete_password(self, service: str, username: str) -> None:
        raise KeyringError("the collection is locked")


class ForgetfulKeyring(MemoryKeyring):
    """Accepts a secret and then does not return it."""

    priority = 1

    def set_password(self, service: str, username: str, password: str) -> None:
        return None
