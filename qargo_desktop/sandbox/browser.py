"""A scripted browser for the sandbox sign-in pages, for tests, CI and demos without a person.

It only does what a person's browser does: GET the page, read its HTML forms, pick an account,
press Accept or Decline, and follow the sign-in response (the ``form_post`` page) back to the
application's loopback redirect URI. It talks to loopback addresses only.

Use it as the system browser through the standard ``BROWSER`` variable::

    BROWSER="python -m qargo_desktop.sandbox.browser %s"

The command returns at once and does its work in a detached process, because Python's
``webbrowser`` waits for the browser command while MSAL's loopback listener (on the same
thread) has not started serving yet. Settings come from the environment:

- ``QARGO_SANDBOX_BROWSER_ACCOUNT``: the account to pick (default: the preselected one);
- ``QARGO_SANDBOX_BROWSER_ACTION``: ``accept`` (default), ``decline`` or ``ignore`` (open the
  page and do nothing, to test deadlines and cancel);
- ``QARGO_SANDBOX_BROWSER_USER_CODE``: the code to enter on the device login page;
- ``QARGO_SANDBOX_CA``: the sandbox CA certificate, for pages served over HTTPS.

In process, :func:`run` does the same from any thread, and :class:`ScriptedBrowser` can be
registered with ``webbrowser.register``.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from ipaddress import ip_address
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

__all__ = [
    "ACTIONS",
    "ENV_ACCOUNT",
    "ENV_ACTION",
    "ENV_CA",
    "ENV_USER_CODE",
    "BrowserError",
    "BrowserResult",
    "ScriptedBrowser",
    "main",
    "parse_page",
    "run",
]

logger = logging.getLogger(__name__)

ENV_ACCOUNT = "QARGO_SANDBOX_BROWSER_ACCOUNT"
ENV_ACTION = "QARGO_SANDBOX_BROWSER_ACTION"
ENV_USER_CODE = "QARGO_SANDBOX_BROWSER_USER_CODE"
ENV_CA = "QARGO_SANDBOX_CA"
ACTIONS = ("accept", "decline", "ignore")

_MAX_STEPS = 20
_LOOPBACK_NAMES = ("localhost",)


class BrowserError(Exception):
    """The scripted browser could not go on (a page it does not understand, a bad address)."""


@dataclass
class BrowserResult:
    """What the scripted browser did.

    Attributes:
        outcome: ``returned`` (the sign-in response reached the application), ``ignored``
            (opened the page only), ``finished`` (ended on a page with nothing to submit, such
            as the device login's last page or an error page).
        final_url: The last URL requested (without its query string).
        status: The last HTTP status.
        title: The last sandbox page's heading.
        returned_error: The ``error`` the sign-in response carried back, if any.
        steps: One line per action, as printed on stderr.
    """

    outcome: str
    final_url: str
    status: int
    title: str = ""
    returned_error: str | None = None
    steps: list[str] = field(default_factory=list)


# HTML


@dataclass
class _Field:
    kind: str  # input type, or "button"
    name: str
    value: str
    checked: bool = False
    label: str = ""


@dataclass
class _Form:
    action: str
    method: str
    id: str
    fields: list[_Field] = field(default_factory=list)

    def named(self, name: str) -> list[_Field]:
        return [f for f in self.fields if f.name == name]

    def buttons(self) -> list[_Field]:
        return [f for f in self.fields if f.kind in ("button", "submit")]

    def button(self, name: str, value: str) -> _Field | None:
        return next((b for b in self.buttons() if b.name == name and b.value == value), None)


@dataclass
class _Page:
    title: str = ""
    heading: str = ""
    forms: list[_Form] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = _Page()
        self._form: _Form | None = None
        self._button: _Field | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if tag == "form":
            self._form = _Form(
                action=values.get("action", ""),
                method=(values.get("method") or "get").lower(),
                id=values.get("id", ""),
            )
            self.page.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            kind = values.get("type", "text").lower()
            self._form.fields.append(
                _Field(
                    kind=kind,
                    name=values.get("name", ""),
                    value=values.get("value", "on" if kind in ("radio", "checkbox") else ""),
                    checked="checked" in values,
                )
            )
        elif tag == "button" and self._form is not None:
            kind = values.get("type", "submit").lower()
            if kind == "submit":
                self._button = _Field("button", values.get("name", ""), values.get("value", ""))
                self._form.fields.append(self._button)
        elif tag in ("title", "h1"):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "button":
            self._button = None
        elif tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if not text:
            return
        if self._button is not None:
            self._button.label = (self._button.label + " " + text).strip()
        if self._in == "title":
            self.page.title += text
        elif self._in == "h1":
            self.page.heading = (self.page.heading + " " + text).strip()
        self.page.text.append(text)


def parse_page(document: str) -> _Page:
    """The title, main heading, forms and text of an HTML page."""
    parser = _PageParser()
    parser.feed(document)
    parser.close()
    return parser.page


# Navigation


def _check_loopback(url: str) -> None:
    # This browser exists for the sandbox: it never talks to anything but this machine.
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BrowserError(f"not an http(s) address: {parts.scheme}:")
    host = parts.hostname or ""
    if host in _LOOPBACK_NAMES:
        return
    try:
        if ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise BrowserError(f"refusing to open a non-loopback address: {host}")


def _show(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class _Session:
    def __init__(self, ca_certificate: str | None, timeout_s: float, say: Callable[[str], None]):
        self._http = requests.Session()
        # Not the environment's proxies or CA bundle: loopback only, and the sandbox CA.
        self._http.trust_env = False
        self._http.verify = ca_certificate if ca_certificate else True
        self._http.headers["User-Agent"] = "QargoSandboxScriptedBrowser/1.0"
        self._timeout_s = timeout_s
        self._say = say

    def close(self) -> None:
        self._http.close()

    def request(
        self, method: str, url: str, data: list[tuple[str, str]] | None = None
    ) -> requests.Response:
        for _ in range(_MAX_STEPS):
            _check_loopback(url)
            response = self._http.request(
                method, url, data=data, allow_redirects=False, timeout=self._timeout_s
            )
            self._say(f"{method} {_show(url)} -> {response.status_code}")
            location = response.headers.get("Location")
            if response.is_redirect and location:
                method, url, data = "GET", urljoin(url, location), None
                continue
            return response
        raise BrowserError("too many redirects")


def _form_data(
    form: _Form, button: _Field | None, overrides: dict[str, str]
) -> list[tuple[str, str]]:
    data: list[tuple[str, str]] = []
    for item in form.fields:
        if not item.name or item.kind in ("button", "submit"):
            continue
        if item.kind in ("radio", "checkbox"):
            if item.name in overrides:
                continue
            if item.checked:
                data.append((item.name, item.value))
            continue
        if item.name in overrides:
            continue
        data.append((item.name, item.value))
    data.extend(overrides.items())
    if button is not None and button.name:
        data.append((button.name, button.value))
    return data


def run(
    url: str,
    account: str | None = None,
    action: str = "accept",
    *,
    user_code: str | None = None,
    ca_certificate: str | None = None,
    timeout_s: float = 30.0,
    say: Callable[[str], None] | None = None,
) -> BrowserResult:
    """Open ``url`` and go through the sandbox sign-in as a person would.

    Args:
        url: The sign-in (authorize) or device login URL; loopback only.
        account: Username to pick (None: the preselected account, else the first).
        action: ``accept``, ``decline`` or ``ignore``.
        user_code: The code for the device login page (None: whatever the page holds).
        ca_certificate: CA bundle for HTTPS pages (None: ``QARGO_SANDBOX_CA`` or the system).
        timeout_s: Timeout of each request.
        say: Where progress lines go (default: stderr).

    Returns:
        What happened.

    Raises:
        BrowserError: A page it cannot act on, or a non-loopback address.
        requests.RequestException: The network failed.
    """
    if action not in ACTIONS:
        raise BrowserError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    steps: list[str] = []

    def note(line: str) -> None:
        steps.append(line)
        (say or _stderr)(line)

    ca = ca_certificate or os.environ.get(ENV_CA) or None
    if ca is None and urlsplit(url).scheme == "https":
        # The sign-in pages are on the plain-HTTP port; over HTTPS only the sandbox CA will do.
        raise BrowserError(f"an https page needs the sandbox CA certificate: set {ENV_CA}")
    session = _Session(ca, timeout_s, note)
    try:
        return _browse(
            session,
            url,
            account=account,
            action=action,
            user_code=user_code,
            steps=steps,
            note=note,
        )
    finally:
        session.close()


def _browse(
    session: _Session,
    url: str,
    *,
    account: str | None,
    action: str,
    user_code: str | None,
    steps: list[str],
    note: Callable[[str], None],
) -> BrowserResult:
    response = session.request("GET", url)
    current = response.url or url
    for _ in range(_MAX_STEPS):
        page = parse_page(response.text) if _is_html(response) else _Page()
        title = page.heading or page.title
        if action == "ignore":
            note(f"opened {title!r} and left it alone")
            return BrowserResult(
                "ignored", _show(current), response.status_code, title, None, steps
            )

        form, button, overrides = _choose(page, account, action, user_code, note)
        if form is None:
            note(f"finished on {title!r}")
            return BrowserResult(
                "finished", _show(current), response.status_code, title, None, steps
            )

        target = urljoin(current, form.action) if form.action else current
        data = _form_data(form, button, overrides)
        if form.id == "form_post":
            returned_error = dict(data).get("error")
            outcome = f"error {returned_error!r}" if returned_error else "a sign-in response"
            note(f"returning {outcome} to {_show(target)}")
            response = session.request("POST", target, data)
            return BrowserResult(
                "returned", _show(target), response.status_code, title, returned_error, steps
            )
        method = "POST" if form.method == "post" else "GET"
        response = session.request(method, target, data)
        current = target
    raise BrowserError("the sign-in did not finish within the expected number of pages")


def _is_html(response: requests.Response) -> bool:
    return "text/html" in response.headers.get("Content-Type", "")


_Choice = tuple[_Form | None, _Field | None, dict[str, str]]


def _choose(
    page: _Page,
    account: str | None,
    action: str,
    user_code: str | None,
    note: Callable[[str], None],
) -> _Choice:
    """The form to submit on this page, the button to press, and the values to fill in."""
    for form in page.forms:
        if form.id == "form_post":
            return form, None, {}
    for form in page.forms:
        if form.named("user_code"):
            return _enter_code(form, user_code, note)
    for form in page.forms:
        radios = [f for f in form.named("account") if f.kind == "radio"]
        if radios:
            return _pick_account(form, radios, account, note)
    for form in page.forms:
        decision = form.button("decision", "accept" if action == "accept" else "decline")
        back = form.button("step", "return")
        pressed = decision or back
        if pressed is not None:
            note(f"pressed {pressed.label or pressed.value!r}")
            return form, pressed, {}
    return None, None, {}


def _enter_code(form: _Form, user_code: str | None, note: Callable[[str], None]) -> _Choice:
    code = user_code or os.environ.get(ENV_USER_CODE) or form.named("user_code")[0].value
    if not code:
        raise BrowserError(f"the device login page needs a code ({ENV_USER_CODE})")
    note("entered the device code")
    buttons = form.buttons()
    return form, buttons[0] if buttons else None, {"user_code": code}


def _pick_account(
    form: _Form, radios: list[_Field], account: str | None, note: Callable[[str], None]
) -> _Choice:
    wanted = account or os.environ.get(ENV_ACCOUNT)
    if wanted:
        choice = next((r for r in radios if r.value.lower() == wanted.lower()), None)
        if choice is None:
            raise BrowserError(f"the page offers no account {wanted}")
    else:
        choice = next((r for r in radios if r.checked), radios[0])
    note(f"picked {choice.value}")
    buttons = form.buttons()
    button = form.button("step", "account") or (buttons[0] if buttons else None)
    return form, button, {"account": choice.value}


def _stderr(line: str) -> None:
    print(f"sandbox browser: {line}", file=sys.stderr, flush=True)


class ScriptedBrowser(webbrowser.BaseBrowser):
    """A ``webbrowser`` browser that runs :func:`run` on a thread (for in-process tests).

    Register it with ``webbrowser.register("qargo-sandbox", None, ScriptedBrowser(),
    preferred=True)``; each ``open()`` returns at once, like a real browser.

    Attributes:
        results: Each finished run's result, in order.
        errors: Exceptions raised by runs.
        threads: The threads started by ``open()``.
    """

    def __init__(
        self,
        account: str | None = None,
        action: str = "accept",
        *,
        user_code: str | None = None,
        ca_certificate: str | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__("qargo-sandbox")
        self.account = account
        self.action = action
        self.user_code = user_code
        self.ca_certificate = ca_certificate
        self.say = say
        self.results: list[BrowserResult] = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.opened: list[str] = []

    def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
        """Start going through the sign-in at ``url`` on a new thread; returns True."""
        self.opened.append(url)
        thread = threading.Thread(
            target=self._run, args=(url,), name="sandbox-browser", daemon=True
        )
        self.threads.append(thread)
        thread.start()
        return True

    def _run(self, url: str) -> None:
        try:
            self.results.append(
                run(
                    url,
                    self.account,
                    self.action,
                    user_code=self.user_code,
                    ca_certificate=self.ca_certificate,
                    say=self.say,
                )
            )
        except Exception as error:
            logger.debug("Scripted browser failed: %s", error)
            self.errors.append(error)

    def join(self, timeout_s: float = 30.0) -> None:
        """Wait for every run started so far."""
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _detach(argv: Sequence[str]) -> None:
    command = [sys.executable, "-m", "qargo_desktop.sandbox.browser", "--foreground", *argv]
    options: dict[str, Any] = {"stdin": subprocess.DEVNULL, "close_fds": True}
    if sys.platform == "win32":
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        options["start_new_session"] = True
    subprocess.Popen(command, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m qargo_desktop.sandbox.browser [options] URL``.

    Returns:
        0 when the browser "opened" (detached) or the run succeeded, 1 on failure, 2 on bad
        arguments.
    """
    parser = argparse.ArgumentParser(
        prog="python -m qargo_desktop.sandbox.browser",
        description="Scripted browser for the Qargo Desktop sandbox sign-in pages.",
    )
    parser.add_argument("url", help="the sign-in page to open (loopback only)")
    parser.add_argument("--account", help=f"account to pick (env {ENV_ACCOUNT})")
    parser.add_argument("--action", choices=ACTIONS, help=f"what to do (env {ENV_ACTION})")
    parser.add_argument("--user-code", help=f"device login code (env {ENV_USER_CODE})")
    parser.add_argument("--ca", help=f"sandbox CA certificate (env {ENV_CA})")
    parser.add_argument(
        "--foreground",
        action="store_true",
        help="do the work in this process and wait for it (default: detach and return at once)",
    )
    args = parser.parse_args(argv)
    action = args.action or os.environ.get(ENV_ACTION) or "accept"
    if action not in ACTIONS:
        parser.error(f"{ENV_ACTION} must be one of {', '.join(ACTIONS)}")

    try:
        _check_loopback(args.url)
    except BrowserError as error:
        _stderr(str(error))
        return 2

    if not args.foreground:
        forwarded = [args.url]
        for flag, value in (
            ("--account", args.account),
            ("--action", action),
            ("--user-code", args.user_code),
            ("--ca", args.ca),
        ):
            if value:
                forwarded[:0] = [flag, value]
        _detach(forwarded)
        return 0

    try:
        result = run(
            args.url,
            args.account,
            action,
            user_code=args.user_code,
            ca_certificate=args.ca,
        )
    except (BrowserError, requests.RequestException) as error:
        _stderr(f"failed: {error}")
        return 1
    _stderr(f"done: {result.outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
