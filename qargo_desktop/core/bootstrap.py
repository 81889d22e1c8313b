"""Build the app's services from its settings, for the window and the command line alike.

Everything here may do I/O (the sandbox binds ports, the token cache reads the keyring
and the disk), so the window calls it from a background task.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlparse

from qargo_desktop.core.config import AppPaths, Settings, app_paths, load_settings, write_config
from qargo_desktop.core.http import build_session
from qargo_desktop.core.services import Endpoints, Services
from qargo_desktop.core.token_cache import EncryptedTokenCache

if TYPE_CHECKING:
    from qargo_desktop.sandbox.server import Sandbox, SandboxInfo

log = logging.getLogger(__name__)

# Authorities MSAL can check against Microsoft's instance discovery; any other host
# (the sandbox, a test double) is used as configured.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)


def is_microsoft_authority(authority: str) -> bool:
    """Whether ``authority`` is one of Microsoft's public sign-in hosts."""
    return (urlparse(authority).hostname or "").lower() in MICROSOFT_AUTHORITY_HOSTS


def endpoints_for(settings: Settings) -> Endpoints:
    """Where the services are, from the settings (which must name them all)."""
    assert settings.authority and settings.client_id and settings.api_base_url
    return Endpoints(
        authority=settings.authority,
        client_id=settings.client_id,
        api_base_url=settings.api_base_url,
        graph_base_url=settings.graph_base_url,
        admin_scopes=settings.admin_scopes,
        validate_authority=is_microsoft_authority(settings.authority),
    )


def build_services(settings: Settings, paths: AppPaths | None = None) -> Services:
    """Build the services for a complete configuration.

    Raises:
        ValueError: The configuration is incomplete (see
            :meth:`Settings.missing_for_production`) or a CA file cannot be loaded.
    """
    missing = settings.missing_for_production()
    if missing:
        raise ValueError("the configuration is incomplete: " + ", ".join(missing))
    assert settings.authority and settings.client_id and settings.api_base_url
    paths = paths or app_paths(settings)
    paths.ensure()
    admin_store = EncryptedTokenCache(paths.cache_file, app_id=settings.client_id)
    mailbox_store = EncryptedTokenCache(
        paths.data_dir / "mailbox_token_cache.bin",
        app_id=f"{settings.client_id}/mailboxes",
        key_username="mailbox-token-cache-key",
    )
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="services") as pool:
        # The session reads the system's CA bundle (about 20 ms, outside the GIL) while
        # the admin's cache reads its key from the keyring.
        building = pool.submit(build_session, settings)
        # The first keyring access is slow; done here, off the GUI thread. The mailboxes'
        # cache opens at its first use (an authorisation or a self-test, in the background):
        # reading its key (about 15 ms, mostly holding the GIL) would delay the list.
        admin_store.open()
        session = building.result()
    return Services(
        endpoints_for(settings),
        session,
        admin_store=admin_store,
        mailbox_store=mailbox_store,
        sign_in_timeout_s=settings.sign_in_timeout_s,
        http_timeout_s=settings.http_timeout_s,
    )


def sandbox_overrides(info: SandboxInfo) -> dict[str, object]:
    """The settings that point the app at a running sandbox."""
    return {
        "authority": info.authority,
        "client_id": info.client_id,
        "api_base_url": info.api_base_url,
        "graph_base_url": info.graph_base_url,
        "admin_scopes": tuple(info.admin_scopes),
        "extra_ca_file": Path(info.ca_certificate),
    }


def start_sandbox_for_app(
    data_dir: Path, settings: Settings | None = None, **options: Any
) -> tuple[Sandbox, Settings]:
    """Start the built-in sandbox in this process; return it and settings that use it."""
    from qargo_desktop.sandbox.server import Sandbox
    from qargo_desktop.sandbox.world import SandboxOptions

    sandbox = Sandbox(SandboxOptions(data_dir=data_dir, **options))
    info = sandbox.start()
    base = settings or load_settings(environ=os.environ)
    from dataclasses import replace

    overrides = sandbox_overrides(info)
    # The sandbox's sign-ins live beside the sandbox, never in the production token cache
    # (which is bound to the production app registration and would be set aside).
    sandbox_settings = replace(
        base,
        sandbox=True,
        data_dir=Path(data_dir),
        **overrides,  # type: ignore[arg-type]
    )
    log.info("Using the built-in sandbox at %s", info.https_base_url)
    return sandbox, sandbox_settings


def write_sandbox_config(path: Path, info: SandboxInfo) -> None:
    """Write a settings file that points the app at a sandbox served elsewhere."""
    values = sandbox_overrides(info)
    values["admin_scopes"] = list(info.admin_scopes)
    values["extra_ca_file"] = str(info.ca_certificate)
    write_config(path, values)


class AppContext:
    """Settings, folders, services and (for ``--sandbox``) the sandbox of one command.

    Use as a context manager: leaving it stops the sandbox.
    """

    def __init__(
        self,
        settings: Settings,
        paths: AppPaths,
        services: Services,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.settings = settings
        self.paths = paths
        self.services = services
        self.sandbox = sandbox

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AppContext:
        """Build the context of a headless command from its parsed arguments.

        Raises:
            ConfigError: A setting is unusable.
            ValueError: The configuration is incomplete and ``--sandbox`` was not given.
        """
        from qargo_desktop.core.logs import setup_logging

        overrides = {
            "config_dir": getattr(args, "config_dir", None),
            "sandbox": getattr(args, "sandbox", False),
        }
        config_file = Path(args.config) if getattr(args, "config", None) else None
        settings = load_settings(config_file, os.environ, overrides)
        paths = app_paths(settings)
        setup_logging(
            paths.log_dir,
            "DEBUG" if getattr(args, "verbose", False) else settings.log_level,
            console=bool(getattr(args, "verbose", False)),
        )
        sandbox = None
        if settings.sandbox:
            # An in-process sandbox forgets its sign-ins when the command ends, so a
            # `signin` here could never serve the next command.
            raise ValueError(
                "--sandbox opens the window on a sandbox of its own; headless commands use "
                "a sandbox that keeps running: start `qargo-desktop sandbox serve "
                "--write-config sandbox.toml` and pass `--config sandbox.toml`"
            )
        try:
            services = build_services(settings, paths)
        except BaseException:
            if sandbox is not None:
                sandbox.stop()
            raise
        return cls(settings, paths, services, sandbox)

    def report_cache_problem(self, say: Callable[[str], None]) -> None:
        """Tell the person, once, when tokens cannot be kept between runs."""
        for store in (self.services.admin_identity.store,):
            problem = getattr(store, "take_problem", lambda: None)()
            if problem:
                say(f"Note: {problem}")

    def close(self) -> None:
        """Stop the sandbox, if this context started one."""
        if self.sandbox is not None:
            self.sandbox.stop()
            self.sandbox = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
