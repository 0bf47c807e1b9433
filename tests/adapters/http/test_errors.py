"""Status classification and Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.http import ErrorPolicy, Response, error_for_response, parse_retry_after
from bus.errors import PermanentError, TransientError

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "expected"), [
    ("30", 30.0),
    (" 1.5 ", 1.5),
    ("-4", 0.0),
    ("Tue, 24 Nov 2026 12:01:30 GMT", 90.0),
    ("Tue, 24 Nov 2026 11:00:00 GMT", 0.0),
    ("soon", None),
    ("", None),
    (None, None),
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_policy_overrides() -> None:
    policy = ErrorPolicy.with_overrides(transient=[409], permanent=[503])

    assert policy.is_transient(409) and policy.is_transient(429)
    assert not policy.is_transient(503) and not policy.is_transient(400)


def test_error_for_response_kinds_and_message() -> None:
    busy = Response(503, {"retry-after": "5"}, b'{"message":\n "down for maintenance"}')
    bad = Response(422, {}, b"x" * 1000)

    transient = error_for_response(busy, ErrorPolicy(), "crm.update")
    permanent = error_for_response(bad, ErrorPolicy(), "crm.update")

    assert isinstance(transient, TransientError) and transient.retry_after == 5.0
    assert str(transient) == 'crm.update: HTTP 503: {"message": "down for maintenance"}'
    assert isinstance(permanent, PermanentError) and str(permanent).endswith("x…")
    assert len(str(permanent)) < 350
