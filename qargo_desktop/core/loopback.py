"""The loopback listener that receives the browser's answer during an interactive sign-in.

MSAL ships its own listener, but it binds every interface when it believes it runs in a
container, polls once a second, and cannot be cancelled. This one takes its place through
MSAL's ``auth_code_receiver`` argument: it binds 127.0.0.1 only, accepts only the
``form_post`` answer that carries the expected ``state``, stops at once when cancelled,
and gives up at its deadline.
"""

from __future__ import annotations

import html
import logging
import selectors
import threading
import time
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from qargo_desktop.core.errors import Cancelled, DeadlineExceeded

log = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
_POLL_S = 0.05
_MAX_FORM_BYTES = 64 * 1024

BrowserOpener = Callable[[str], bool]

_PAGE = """<!doctype html>
<html lang="en-GB"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:4em auto;max-width:36em;color:#1f2933}}
h1{{font-size:1.4em}}</style></head>
<body><h1>{title}</h1><p>{text}</p></body></html>"""


def open_system_browser(url: str) -> bool:
    """Open ``url`` in the system browser (honours the ``BROWSER`` variable)."""
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


class _Server(HTTPServer):
    # Refuse to share the port: another process must not be able to bind it too.
    allow_reuse_address = False

    def __init__(self) -> None:
        super().__init__((LOOPBACK_HOST, 0), _Handler)
        self.expected_state: str | None = None
        self.response: dict[str, str] | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # A client that connects and then says nothing must not hold up cancel or deadline.
    timeout = 2

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        if "code" in query or "error" in query:
            # The app always asks for response_mode=form_post; an answer in the query
            # string did not come from the identity platform it talks to.
            self._page(400, "Sign-in not accepted", "This answer arrived in an unexpected form.")
            return
        self._page(
            200,
            "Waiting for sign-in",
            "Qargo Desktop is waiting for you to finish signing in. Return to the sign-in "
            "page in your browser.",
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > _MAX_FORM_BYTES:
            self._page(400, "Sign-in not accepted", "The answer was empty or too large.")
            return
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode("utf-8")).items()}
        if "code" not in form and "error" not in form:
            self._page(400, "Sign-in not accepted", "The answer carried no result.")
            return
        if form.get("state") != self.server.expected_state:
            log.warning("Loopback listener refused an answer with an unexpected state")
            self._page(
                400,
                "Sign-in not accepted",
                "This answer belongs to another sign-in. Start again from Qargo Desktop.",
            )
            return
        if "code" in form:
            self._page(
                200,
                "Signed in",
                "You can close this tab and return to Qargo Desktop. For your security, do "
                "not share this page's address.",
            )
        else:
            self._page(
                200,
                "Sign-in did not complete",
                "Return to Qargo Desktop to see what happened and what to do next.",
            )
        self.server.response = form

    def _page(self, status: int, title: str, text: str) -> None:
        body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line carries no secret (answers arrive by POST), but keep it quiet.
        log.debug("loopback: " + format, *args)


class LoopbackReceiver:
    """MSAL ``auth_code_receiver`` bound to 127.0.0.1, cancellable, with a deadline.

    Args:
        cancel: Set it from any thread to stop waiting at once.
        deadline_s: Seconds to wait for the browser's answer.
        opener: Opens the sign-in page; returns whether a browser was started.
        on_auth_uri: Called (from the listener thread) with the sign-in page address,
            whether or not a browser opened, so the person can copy it.
        on_browser_failed: Called when no browser could be opened.
    """

    def __init__(
        self,
        *,
        cancel: threading.Event | None = None,
        deadline_s: float = 300.0,
        opener: BrowserOpener | None = None,
        on_auth_uri: Callable[[str], None] | None = None,
        on_browser_failed: Callable[[str], None] | None = None,
    ) -> None:
        self._cancel = cancel or threading.Event()
        self._deadline_s = deadline_s
        self._opener = opener or open_system_browser
        self._on_auth_uri = on_auth_uri
        self._on_browser_failed = on_browser_failed
        self._server = _Server()
        self._closed = False
        log.debug("Loopback listener bound to %s:%d", *self.address)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the listener is bound to."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def closed(self) -> bool:
        """Whether the listening socket is closed."""
        return self._closed

    def get_port(self) -> int:
        """Return the bound port (MSAL builds the redirect URI from it)."""
        return self.address[1]

    def get_auth_response(
        self,
        auth_uri: str | None = None,
        state: str | None = None,
        timeout: float | None = None,
        **_ignored: Any,
    ) -> dict[str, str]:
        """Open the browser at ``auth_uri`` and wait for the answer with ``state``.

        Raises:
            Cancelled: ``cancel`` was set.
            DeadlineExceeded: No answer arrived before the deadline.
        """
        self._server.expected_state = state
        deadline = time.monotonic() + (timeout or self._deadline_s)
        if auth_uri:
            if self._on_auth_uri is not None:
                self._on_auth_uri(auth_uri)
            # A browser command may block (a text browser, a slow launcher): open it on
            # its own thread so the listener serves at once.
            threading.Thread(
                target=self._open, args=(auth_uri,), name="browser-opener", daemon=True
            ).start()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._server.socket, selectors.EVENT_READ)
                while True:
                    if self._cancel.is_set():
                        raise Cancelled("sign-in cancelled")
                    if time.monotonic() >= deadline:
                        raise DeadlineExceeded("sign-in not completed in time")
                    if selector.select(_POLL_S):
                        self._server.handle_request()
                    if self._server.response is not None:
                        return self._server.response
        finally:
            self.close()

    def _open(self, url: str) -> None:
        try:
            opened = self._opener(url)
        except Exception:  # a broken browser setting must not end the sign-in
            log.exception("Opening the browser failed")
            opened = False
        if not opened:
            log.warning("No browser could be opened; the sign-in link is offered to copy")
            if self._on_browser_failed is not None:
                self._on_browser_failed(url)

    def close(self) -> None:
        """Stop listening. Safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._server.server_close()
            log.debug("Loopback listener closed")

    def __enter__(self) -> LoopbackReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
