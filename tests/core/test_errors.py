"""The advice table: documented, and every class of error explained with its ids."""

from __future__ import annotations

from pathlib import Path

from qargo_desktop.core import errors_doc
from qargo_desktop.core.errors import (
    ADVICE,
    ApiError,
    GraphError,
    IdentityError,
    NextStep,
    advice_for,
)

ROOT = Path(__file__).resolve().parents[2]


def test_docs_match_the_table() -> None:
    assert (ROOT / "docs" / "errors.md").read_text() == errors_doc.render()


def test_every_advice_is_a_sentence() -> None:
    for key, advice in ADVICE.items():
        assert advice.summary.endswith("."), key
        assert advice.summary[0].isupper(), key


def test_identity_errors_map_by_aadsts_number_first() -> None:
    declined = IdentityError("access_denied", "AADSTS65004: User declined to consent.")
    assert declined.key == "aadsts:65004"
    assert "declined" in declined.explain()
    needs_admin = IdentityError("invalid_grant", "AADSTS90094: Admin consent is required.")
    assert needs_admin.advice.next_step is NextStep.ASK_TENANT_ADMIN
    redirect = IdentityError("invalid_request", "AADSTS50011: The redirect URI ... mismatch.")
    assert "redirect URI" in redirect.explain()
    mfa = IdentityError(
        "interaction_required", "AADSTS50076: MFA required.", claims='{"access_token":{}}'
    )
    assert mfa.claims and "multi-factor" in mfa.explain()


def test_unknown_codes_show_code_and_correlation_id() -> None:
    unknown = IdentityError("server_error", "AADSTS99999: Something new.", correlation_id="c-1")
    text = unknown.explain()
    assert "AADSTS99999" in text and "c-1" in text
    assert "Qargo Support" in text
    api = ApiError(500, "brand_new_code", "Boom", correlation_id="c-2")
    assert "brand_new_code" in api.explain() and "c-2" in api.explain()


def test_throttling_and_unavailability_without_a_code() -> None:
    assert ApiError(429, None, "Too Many Requests").advice.next_step is NextStep.RETRY_LATER
    assert GraphError(503, None, "Unavailable").advice.next_step is NextStep.RETRY_LATER
    assert advice_for("api:mailbox_unusable").next_step is NextStep.ASK_TENANT_ADMIN
    assert advice_for(None, "graph:MailboxNotEnabledForRESTAPI").summary
