"""The shared TLS client context: the settings each adapter relies on."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from adapters.tls import client_context


def _trusts_test_ca(context: ssl.SSLContext) -> bool:
    subject = ((("commonName", "127.0.0.1"),),)
    return any(ca.get("subject") == subject for ca in context.get_ca_certs())


def test_default_checks_certificate_and_host_name() -> None:
    context = client_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_ca_bundle_is_trusted_and_still_checked(tls_cert: tuple[Path, Path]) -> None:
    context = client_context(str(tls_cert[0]))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert _trusts_test_ca(context)
    assert not _trusts_test_ca(client_context())


def test_verify_false_accepts_anything_but_still_loads_the_bundle(tls_cert: tuple[Path, Path]) -> None:
    context = client_context(verify=False)
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    assert _trusts_test_ca(client_context(str(tls_cert[0]), verify=False))
    with pytest.raises(FileNotFoundError):  # a wrong ca_file is a configuration error even when unchecked
        client_context("/nonexistent/ca.pem", verify=False)
