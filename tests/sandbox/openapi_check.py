"""Check organisation API responses against the OpenAPI contract in resources/openapi/.

``check_response(response)`` finds the operation for the request's method and path, the
response for its status (or ``default``), checks the documented required headers, and
validates the JSON body against the schema with jsonschema (Draft 2020-12, as OpenAPI 3.1
uses). ``ContractSession`` is a requests session that checks every response it gets.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import requests
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from qargo_desktop.core.resources import resource_path

SPEC_URI = "urn:qargo:organisation-api"


@functools.cache
def load_spec() -> dict[str, Any]:
    """The contract, parsed."""
    path = resource_path("openapi", "qargo-organisation-api.json")
    spec: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return spec


@functools.cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
    return registry


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/components/...``) until a concrete object remains."""
    while "$ref" in node:
        pointer = node["$ref"]
        assert pointer.startswith("#/"), pointer
        target: Any = load_spec()
        for part in pointer[2:].split("/"):
            target = target[part]
        node = target
    return node


def find_operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The path template matching ``path`` and its operation for ``method``.

    Raises:
        AssertionError: The contract has no such operation.
    """
    for template, item in load_spec()["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "/?$"
        if re.match(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"the contract has no operation {method} {path}")


def response_spec(method: str, path: str, status: int) -> dict[str, Any]:
    """The resolved response object the contract gives for ``(method, path, status)``."""
    template, operation = find_operation(method, path)
    responses = operation["responses"]
    spec = responses.get(str(status)) or responses.get("default")
    assert spec is not None, f"{method} {template} does not document status {status}"
    return _resolve(spec)


def _anchored(node: Any) -> Any:
    """A copy of ``node`` whose local ``$ref`` values point into the contract document."""
    if isinstance(node, dict):
        return {
            key: SPEC_URI + value
            if key == "$ref" and isinstance(value, str) and value.startswith("#/")
            else _anchored(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_anchored(item) for item in node]
    return node


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """Validate ``instance`` against a schema of the contract (its ``$ref`` values resolved)."""
    wrapper = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_anchored(schema)}
    validator = jsonschema.Draft202012Validator(
        wrapper, registry=_registry(), format_checker=jsonschema.FormatChecker()
    )
    validator.validate(instance)


def check_response(response: requests.Response, *, base_path: str = "/api") -> None:
    """Assert that ``response`` is one the contract allows for its request.

    Args:
        response: A response of the organisation API.
        base_path: Where the API is mounted (the contract's paths start below it).
    """
    request = response.request
    assert request.method is not None and request.url is not None
    path = urlsplit(request.url).path
    assert path.startswith(base_path), path
    path = path[len(base_path) :]
    spec = response_spec(request.method, path, response.status_code)

    for name, raw_header in spec.get("headers", {}).items():
        if _resolve(raw_header).get("required"):
            assert name in response.headers, f"{request.method} {path}: header {name} missing"

    content = spec.get("content")
    if not content:
        assert not response.content, f"{request.method} {path}: body where none is documented"
        return
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    assert media_type in content, f"{request.method} {path}: {media_type} not in {list(content)}"
    validate(response.json(), content[media_type]["schema"])


class ContractSession(requests.Session):
    """A session that trusts the sandbox CA and checks every API response against the contract."""

    def __init__(self, ca_certificate: str, base_url: str, token: str | None = None) -> None:
        super().__init__()
        # The machine's REQUESTS_CA_BUNDLE would otherwise replace this session's trust.
        self.trust_env = False
        self.verify = ca_certificate
        self.base_url = base_url.rstrip("/")
        self.base_path = urlsplit(self.base_url).path
        self.check = True
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if url.startswith("/"):
            url = self.base_url + url
        response = super().request(method, url, *args, **kwargs)
        if self.check and urlsplit(url).path.startswith(self.base_path + "/v1/"):
            check_response(response, base_path=self.base_path)
        return response
