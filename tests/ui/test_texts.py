"""Relative times and error summaries."""

from __future__ import annotations

from datetime import timedelta

from qargo_desktop.core.models import LastError
from qargo_desktop.ui import texts
from tests.ui.conftest import NOW


def test_relative_times() -> None:
    cases = {
        timedelta(seconds=-20): "Just now",
        timedelta(seconds=10): "Just now",
        timedelta(minutes=5): "5 min ago",
        timedelta(minutes=59): "59 min ago",
        timedelta(minutes=65): "1 hour ago",
        timedelta(hours=5): "5 hours ago",
        timedelta(hours=30): "Yesterday",
        timedelta(days=4): "4 days ago",
    }
    for delta, text in cases.items():
        assert texts.relative_time(NOW - delta, NOW) == text
    assert texts.relative_time(None, NOW) == "Never"
    assert texts.relative_time(NOW - timedelta(days=90), NOW).endswith("2024")


def test_local_time_has_no_platform_specific_padding() -> None:
    moment = NOW.replace(day=4)
    local = moment.astimezone()
    assert texts.local_time(moment).startswith(f"{local.day} ")


def test_error_advice_accepts_every_kind_of_code() -> None:
    assert texts.error_advice(LastError("AADSTS65004", "", None)) is not None
    assert texts.error_advice(
        LastError("invalid_grant", "AADSTS50173: revoked", None)
    ).summary.startswith("The mailbox's grant")
    assert texts.error_advice(LastError("ErrorAccessDenied", "", None)) is not None
    assert texts.error_advice(LastError("declined", "", None)) is None
    assert (
        texts.error_summary(LastError("declined", "", None)) == "Unrecognised error (code declined)"
    )


def test_counts_read_naturally() -> None:
    assert texts.mailbox_count(1) == "1 mailbox"
    assert texts.mailbox_count(10000) == "10,000 mailboxes"
