from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.base import WebhookRequest
from adapters.signatures import (
    SignatureError,
    Verifier,
    frappe_signature,
    hmac_signature,
    hubspot_request_uri,
    hubspot_v1_signature,
    hubspot_v2_signature,
    hubspot_v3_signature,
    token_from_url,
    verify_frappe,
    verify_hmac,
    verify_hubspot,
    verify_token,
)
from bus.errors import ConfigError, PermanentError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return doc


@pytest.fixture
def hubspot() -> dict[str, Any]:
    return load("hubspot/signature_test_vectors.json")


def reason_of(exc: pytest.ExceptionInfo[SignatureError]) -> str:
    return exc.value.reason


# -- HubSpot vectors -----------------------------------------------------------------------------------
def test_hubspot_v3_vector(hubspot: dict[str, Any]) -> None:
    got = hubspot_v3_signature(hubspot["client_secret"], hubspot["http_method"], hubspot["url"],
                               hubspot["request_body"].encode(), str(hubspot["timestamp"]))
    assert got == hubspot["expected"]["v3_base64_hmac_sha256(secret, method+uri+body+timestamp)"]


def test_hubspot_legacy_vectors(hubspot: dict[str, Any]) -> None:
    body = hubspot["request_body"].encode()
    assert hubspot_v1_signature(hubspot["client_secret"], body) == hubspot["expected"]["v1_sha256_hex_of_secret+body"]
    assert hubspot_v2_signature(hubspot["client_secret"], "POST", hubspot["url"], body) == \
        hubspot["expected"]["v2_sha256_hex_of_secret+method+uri+body"]
    assert hubspot_v2_signature(hubspot["client_secret"], "GET", hubspot["url"], b"") == \
        hubspot["expected"]["v2_GET_empty_body"]


def v3_headers(hubspot: dict[str, Any], timestamp: int | None = None, signature: str | None = None) -> dict[str, str]:
    ts = str(hubspot["timestamp"] if timestamp is None else timestamp)
    sig = signature if signature is not None else hubspot_v3_signature(
        hubspot["client_secret"], "POST", hubspot["url"], hubspot["request_body"].encode(), ts)
    return {"x-hubspot-signature-v3": sig, "x-hubspot-request-timestamp": ts}


def test_verify_hubspot_v3_accepts_vector_at_its_time(hubspot: dict[str, Any]) -> None:
    # Given the clock pinned 1 s after the vector's timestamp (ms)
    clock = lambda: hubspot["timestamp"] / 1000 + 1  # noqa: E731
    expected = hubspot["expected"]["v3_base64_hmac_sha256(secret, method+uri+body+timestamp)"]
    headers = {"X-HubSpot-Signature-V3": expected, "X-HubSpot-Request-Timestamp": str(hubspot["timestamp"])}
    # Then the request verifies (header names match case-insensitively)
    verify_hubspot(headers, "POST", hubspot["url"], hubspot["request_body"].encode(), hubspot["client_secret"],
                   clock=clock)


@pytest.mark.parametrize("skew_ms", [300_001, -300_001, 86_400_000, -86_400_000])
def test_verify_hubspot_v3_rejects_stale_and_future(hubspot: dict[str, Any], skew_ms: int) -> None:
    now_ms = 1_700_000_000_000
    headers = v3_headers(hubspot, timestamp=now_ms - skew_ms)
    with pytest.raises(SignatureError) as exc:
        verify_hubspot(headers, "POST", hubspot["url"], hubspot["request_body"].encode(), hubspot["client_secret"],
                       clock=lambda: now_ms / 1000)
    assert reason_of(exc) == "stale"


@pytest.mark.parametrize("skew_ms", [300_000, -300_000, 0])
def test_verify_hubspot_v3_accepts_within_tolerance(hubspot: dict[str, Any], skew_ms: int) -> None:
    now_ms = 1_700_000_000_000
    verify_hubspot(v3_headers(hubspot, timestamp=now_ms - skew_ms), "POST", hubspot["url"],
                   hubspot["request_body"].encode(), hubspot["client_secret"], clock=lambda: now_ms / 1000)


def test_verify_hubspot_v3_mismatch_missing_malformed(hubspot: dict[str, Any]) -> None:
    now = hubspot["timestamp"] / 1000
    body = hubspot["request_body"].encode()
    secret = hubspot["client_secret"]
    with pytest.raises(SignatureError) as exc:
        verify_hubspot(v3_headers(hubspot), "POST", hubspot["url"], body + b" ", secret, clock=lambda: now)
    assert reason_of(exc) == "mismatch"
    with pytest.raises(SignatureError) as exc:
        verify_hubspot(v3_headers(hubspot), "POST", hubspot["url"], body, "other-secret", clock=lambda: now)
    assert reason_of(exc) == "mismatch"
    with pytest.raises(SignatureError) as exc:
        verify_hubspot({}, "POST", hubspot["url"], body, secret, clock=lambda: now)
    assert reason_of(exc) == "missing"
    with pytest.raises(SignatureError) as exc:
        verify_hubspot({"x-hubspot-signature-v3": "abc="}, "POST", hubspot["url"], body, secret, clock=lambda: now)
    assert reason_of(exc) == "missing"  # timestamp header absent
    with pytest.raises(SignatureError) as exc:
        verify_hubspot(v3_headers(hubspot, signature="not base64!"), "POST", hubspot["url"], body, secret,
                       clock=lambda: now)
    assert reason_of(exc) == "malformed"
    with pytest.raises(SignatureError) as exc:
        verify_hubspot({"x-hubspot-signature-v3": "abc=", "x-hubspot-request-timestamp": "soon"}, "POST",
                       hubspot["url"], body, secret, clock=lambda: now)
    assert reason_of(exc) == "malformed"


def test_verify_hubspot_tolerates_plus_turned_into_space(hubspot: dict[str, Any]) -> None:
    # HubSpot's base64 can contain '+'; a proxy that URL-decodes headers turns it into a space.
    now = hubspot["timestamp"] / 1000
    for secret in (f"s{i}" for i in range(200)):
        sig = hubspot_v3_signature(secret, "POST", hubspot["url"], b"{}", str(hubspot["timestamp"]))
        if "+" in sig:
            break
    else:
        pytest.fail("no signature with '+' found")
    headers = v3_headers(hubspot, signature=sig.replace("+", " "))
    verify_hubspot(headers, "POST", hubspot["url"], b"{}", secret, clock=lambda: now)


def test_hubspot_request_uri_decodes_only_listed_escapes() -> None:
    url = "https://h.example/hooks/crm/deal?q=%3A%2f%3F%40%21%24%27%28%29%2A%2C%3B&x=%20%26%3D%25"
    assert hubspot_request_uri(url) == "https://h.example/hooks/crm/deal?q=:/?@!$'()*,;&x=%20%26%3D%25"


def test_hubspot_v3_signs_decoded_uri(hubspot: dict[str, Any]) -> None:
    # The signature over the URL with %3A escapes equals one computed over the decoded form.
    secret, ts = hubspot["client_secret"], "1700000000000"
    raw = "https://h.example/hooks/crm/deal?t=2024-01-01T00%3A00"
    message = b"POST" + b"https://h.example/hooks/crm/deal?t=2024-01-01T00:00" + b"{}" + ts.encode()
    expected = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    assert hubspot_v3_signature(secret, "POST", raw, b"{}", ts) == expected


def test_hubspot_legacy_only_when_allowed(hubspot: dict[str, Any]) -> None:
    body = hubspot["request_body"].encode()
    secret = hubspot["client_secret"]
    v1 = {"x-hubspot-signature": hubspot["expected"]["v1_sha256_hex_of_secret+body"],
          "x-hubspot-signature-version": "v1"}
    with pytest.raises(SignatureError) as exc:
        verify_hubspot(v1, "POST", hubspot["url"], body, secret)
    assert reason_of(exc) == "missing"
    verify_hubspot(v1, "POST", hubspot["url"], body, secret, allow_legacy=True)
    v2 = {"x-hubspot-signature": hubspot["expected"]["v2_sha256_hex_of_secret+method+uri+body"],
          "x-hubspot-signature-version": "v2"}
    verify_hubspot(v2, "POST", hubspot["url"], body, secret, allow_legacy=True)
    with pytest.raises(SignatureError) as exc:
        verify_hubspot(v2, "POST", hubspot["url"], body + b"x", secret, allow_legacy=True)
    assert reason_of(exc) == "mismatch"
    with pytest.raises(SignatureError) as exc:
        verify_hubspot({**v2, "x-hubspot-signature-version": "v9"}, "POST", hubspot["url"], body, secret,
                       allow_legacy=True)
    assert reason_of(exc) == "malformed"


# -- Frappe --------------------------------------------------------------------------------------------
def test_frappe_vector() -> None:
    vector = load("erpnext/webhook_signature_test_vector_COMPUTED.json")
    body = vector["raw_body"].encode()
    assert frappe_signature(vector["webhook_secret"], body) == vector["header"]["X-Frappe-Webhook-Signature"]
    verify_frappe(vector["header"], body, vector["webhook_secret"])
    with pytest.raises(SignatureError) as exc:
        verify_frappe(vector["header"], body.replace(b"1500.0", b"15000.0"), vector["webhook_secret"])
    assert reason_of(exc) == "mismatch"
    # A hex digest in the header (a common mistake) is not valid base64 of the right length: mismatch/malformed.
    hexed = {"X-Frappe-Webhook-Signature": hmac_signature(vector["webhook_secret"], body, encoding="hex")}
    with pytest.raises(SignatureError):
        verify_frappe(hexed, body, vector["webhook_secret"])


# -- generic HMAC --------------------------------------------------------------------------------------
def test_generic_hmac_hex_with_prefix() -> None:
    body = b'{"id": 7}'
    sig = hmac_signature("k", body)
    assert sig == hmac.new(b"k", body, hashlib.sha256).hexdigest()
    verify_hmac({"x-sig": f"sha256={sig}"}, body, "k", header="x-sig", prefix="sha256=")
    with pytest.raises(SignatureError) as exc:
        verify_hmac({"x-sig": sig}, body, "k", header="x-sig", prefix="sha256=")
    assert reason_of(exc) == "malformed"
    with pytest.raises(SignatureError) as exc:
        verify_hmac({"x-sig": "sha256=zz"}, body, "k", header="x-sig", prefix="sha256=")
    assert reason_of(exc) == "malformed"
    with pytest.raises(SignatureError) as exc:
        verify_hmac({"x-sig": f"sha256={hmac_signature('other', body)}"}, body, "k", header="x-sig",
                    prefix="sha256=")
    assert reason_of(exc) == "mismatch"


def test_generic_hmac_base64_with_timestamp_seconds_and_ms() -> None:
    body = b"payload"
    now = 1_700_000_000.0
    for stamp in ("1700000100", "1700000100000"):
        sig = hmac_signature("k", body, encoding="base64", timestamp=stamp)
        verify_hmac({"sig": sig, "ts": stamp}, body, "k", header="sig", encoding="base64", timestamp_header="ts",
                    tolerance=300, clock=lambda: now)
    old = "1699999000"
    sig = hmac_signature("k", body, encoding="base64", timestamp=old)
    with pytest.raises(SignatureError) as exc:
        verify_hmac({"sig": sig, "ts": old}, body, "k", header="sig", encoding="base64", timestamp_header="ts",
                    tolerance=300, clock=lambda: now)
    assert reason_of(exc) == "stale"
    # The timestamp is part of the signed string: changing it breaks the signature.
    with pytest.raises(SignatureError) as exc:
        verify_hmac({"sig": sig, "ts": "1700000000"}, body, "k", header="sig", encoding="base64",
                    timestamp_header="ts", tolerance=300, clock=lambda: now)
    assert reason_of(exc) == "mismatch"


# -- token ---------------------------------------------------------------------------------------------
def test_token_from_url_and_verify() -> None:
    assert token_from_url("https://h/hooks/odoo/changed/s3cret?x=1") == "s3cret"
    assert token_from_url("https://h/hooks/odoo/changed") is None
    assert token_from_url("https://h/other/odoo/changed/x") is None
    verify_token("s3cret", "s3cret")
    with pytest.raises(SignatureError) as exc:
        verify_token("s3cret", "s3cre")
    assert reason_of(exc) == "mismatch"
    with pytest.raises(SignatureError) as exc:
        verify_token("s3cret", None)
    assert reason_of(exc) == "missing"


# -- Verifier ------------------------------------------------------------------------------------------
def request(url: str = "https://h/hooks/s/t", headers: dict[str, str] | None = None, body: bytes = b"{}") -> \
        WebhookRequest:
    return WebhookRequest(method="POST", url=url, headers=headers or {}, body=body)


def test_verifier_schemes_from_settings() -> None:
    Verifier.from_settings(None).verify(request())  # scheme none accepts anything
    token = Verifier.from_settings({"scheme": "token", "secret": "t0k"})
    token.verify(request(url="https://h/hooks/s/t/t0k"))
    with pytest.raises(SignatureError):
        token.verify(request(url="https://h/hooks/s/t/nope"))
    header_token = Verifier.from_settings({"scheme": "token", "secret": "t0k", "header": "X-Token"})
    header_token.verify(request(headers={"x-token": "t0k"}))
    frappe = Verifier.from_settings({"scheme": "frappe", "secret": "fs"})
    frappe.verify(request(headers={"x-frappe-webhook-signature": frappe_signature("fs", b"{}")}))
    generic = Verifier.from_settings({"scheme": "hmac-sha256", "secret": "g", "header": "X-Sig",
                                      "encoding": "base64", "prefix": "v1=", "timestamp_header": "x-ts",
                                      "tolerance": "1m"}, clock=lambda: 1000.0)
    assert generic.tolerance == 60.0
    sig = hmac_signature("g", b"{}", encoding="base64", timestamp="1030")
    generic.verify(request(headers={"x-sig": f"v1={sig}", "x-ts": "1030"}))
    hub = Verifier.from_settings({"scheme": "hubspot-v3", "secret": "h"}, clock=lambda: 1000.0)
    ts = "1000000"
    url = "https://h/hooks/crm/deal"
    hub.verify(request(url=url, headers={"x-hubspot-signature-v3": hubspot_v3_signature("h", "POST", url, b"{}", ts),
                                          "x-hubspot-request-timestamp": ts}))


def test_signature_error_is_permanent_with_status_401() -> None:
    error = SignatureError("stale", "old")
    assert isinstance(error, PermanentError)
    assert (error.status, error.reason) == (401, "stale")


@pytest.mark.parametrize(("settings", "field"), [
    ({"scheme": "rot13", "secret": "x"}, "signature.scheme"),
    ({"scheme": "frappe"}, "signature.secret"),
    ({"scheme": "hmac-sha256", "secret": "x"}, "signature.header"),
    ({"scheme": "hmac-sha256", "secret": "x", "header": "h", "encoding": "hexa"}, "signature.encoding"),
    ({"scheme": "hmac-sha256", "secret": "x", "header": "h", "tolerance": "soon"}, "signature.tolerance"),
])
def test_verifier_settings_errors_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Verifier.from_settings(settings)


def test_errors_never_echo_secret_or_signature(hubspot: dict[str, Any]) -> None:
    secret = "very-secret-value"
    sig = hmac_signature("other", b"x")
    messages = []
    calls: list[Callable[[], None]] = [
        lambda: verify_hmac({"s": sig}, b"x", secret, header="s"),
        lambda: verify_token(secret, "guess"),
        lambda: verify_hubspot({"x-hubspot-signature-v3": sig, "x-hubspot-request-timestamp": "1"}, "POST",
                               "https://h/", b"x", secret, clock=lambda: 0.0),
    ]
    for call in calls:
        with pytest.raises(SignatureError) as exc:
            call()
        messages.append(str(exc.value))
    assert all(secret not in m and sig not in m and "guess" not in m for m in messages), messages
