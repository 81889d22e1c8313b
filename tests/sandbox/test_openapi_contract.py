"""The OpenAPI 3.1 contract: valid, complete, and in step with the sandbox API."""

from __future__ import annotations

import inspect
import re
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import requests
from openapi_spec_validator import validate

from qargo_desktop.sandbox import api
from tests.sandbox.openapi_check import check_response, load_spec, response_spec
from tests.sandbox.openapi_check import validate as validate_schema


def test_the_contract_is_valid_openapi_3_1() -> None:
    spec = load_spec()
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def _contract_operations() -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch"}
    return {
        (method.upper(), re.sub(r"\{[^}]+\}", "{}", template))
        for template, item in load_spec()["paths"].items()
        for method in item
        if method in methods
    }


def _sandbox_operations() -> set[tuple[str, str]]:
    found = set()
    for rule in api._URLS.iter_rules():
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            found.add((method, re.sub(r"<[^>]+>", "{}", rule.rule)))
    return found


def test_every_route_is_in_the_contract_and_back() -> None:
    assert _sandbox_operations() == _contract_operations()


def test_every_problem_code_the_api_raises_is_documented() -> None:
    source = inspect.getsource(api)
    raised = set(re.findall(r'ApiError\(\s*\d{3},\s*"([a-z_]+)"', source))
    assert {"mailbox_not_found", "precondition_failed", "account_mismatch"} <= raised
    text = str(load_spec())
    missing = sorted(code for code in raised if f"`{code}`" not in text)
    assert not missing, f"codes missing from the contract: {missing}"


@pytest.mark.parametrize(
    ("method", "path", "status", "has_body"),
    [
        ("GET", "/v1/organisation/linked-mailboxes", 200, True),
        ("GET", "/v1/organisation/linked-mailboxes", 304, False),
        ("DELETE", "/v1/organisation/linked-mailboxes/mbx_1", 204, False),
        ("PUT", "/v1/organisation/linked-mailboxes/mbx_1/authorisations/att_1", 410, True),
        ("POST", "/v1/organisation/linked-mailboxes/mbx_1/reset", 429, True),
        ("GET", "/v1/me", 418, True),
    ],
)
def test_responses_are_found_for_each_status(
    method: str, path: str, status: int, has_body: bool
) -> None:
    spec = response_spec(method, path, status)
    assert ("content" in spec) is has_body
    assert "request-id" in spec["headers"]


def test_mailbox_schema_allows_unknown_states_and_nulls() -> None:
    schemas = load_spec()["components"]["schemas"]
    mailbox: dict[str, Any] = {
        "id": "mbx_1",
        "address": "archive@northwind-haulage.example",
        "display_name": "Archive",
        "status": "suspended",
        "status_reason": None,
        "status_changed_at": "2026-12-04T15:27:54Z",
        "linked_at": None,
        "linked_by": None,
        "granted_scopes": [],
        "last_sync_at": None,
        "last_error": None,
        "etag": '"abc"',
        "authorisation": None,
    }
    validate_schema(mailbox, schemas["Mailbox"])
    with pytest.raises(jsonschema.ValidationError):
        validate_schema({**mailbox, "status_changed_at": "yesterday"}, schemas["Mailbox"])
    with pytest.raises(jsonschema.ValidationError):
        validate_schema({k: v for k, v in mailbox.items() if k != "etag"}, schemas["Mailbox"])


def _fake_response(
    method: str, path: str, status: int, body: bytes, **headers: str
) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers.update(headers)
    response.request = requests.Request(method, f"https://127.0.0.1:1/api{path}").prepare()
    return response


def test_the_checker_catches_a_broken_response() -> None:
    ids = {"request-id": "r", "x-correlation-id": "r"}
    good = _fake_response(
        "GET", "/v1/me", 200,
        b'{"id":"1","username":"u","display_name":"U","tenant_id":"t",'
        b'"is_super_admin":false,"roles":[]}',
        **{"Content-Type": "application/json"}, **ids,
    )  # fmt: skip
    check_response(good)
    wrong_type = _fake_response(
        "GET", "/v1/me", 200, b'{"id":"1"}', **{"Content-Type": "application/json"}, **ids
    )
    with pytest.raises(jsonschema.ValidationError):
        check_response(wrong_type)
    no_etag = _fake_response(
        "GET",
        "/v1/organisation",
        304,
        b"",
        **ids,
    )
    with pytest.raises(AssertionError, match="ETag"):
        check_response(no_etag)
    with pytest.raises(AssertionError, match="no operation"):
        check_response(_fake_response("GET", "/v1/unknown", 200, b"{}", **ids))
