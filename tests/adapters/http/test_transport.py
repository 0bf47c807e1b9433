"""The pooled transport's reading of request URLs: the origin prefix is parsed once, the rest as urlsplit
would read it."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from adapters.http import pooled as pooled_module
from adapters.http.pooled import PooledTransport

URLS = [
    "http://127.0.0.1:8080/api/orders/1?x=1",
    "https://Example.COM/a/b",
    "https://example.com:443/x",
    "http://example.com",
    "http://example.com?q=1",
    "http://example.com/p?",
    "http://example.com/p#frag?x=1",
    "http://example.com/p?q=1#frag",
    "http://example.com/a%2Fb/%20c?x=%0D%0A",
    "http://[::1]:8443/x",
    "http://user:pw@example.com:81/x",
    "HTTP://example.com/upper-case-scheme",
    "http://example.com/p\r\nX-Injected: 1",
    "http://exa\tmple.com/tab",
    " http://example.com/leading-blank",
]


def urlsplit_reading(url: str) -> tuple[str, str | None, int, str, str]:
    """What send() computed from urlsplit on every request before prefixes were remembered."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname, parts.port or (443 if scheme == "https" else 80), parts.path, target


@pytest.mark.parametrize("url", URLS)
def test_urls_are_read_as_urlsplit_reads_them(url: str) -> None:
    transport = PooledTransport()
    for _ in ("parsed", "remembered"):
        origin, path, target = transport._resolve(url)
        assert (origin.scheme, origin.host, origin.port, path, target) == urlsplit_reading(url)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http:///x", "http://[::1/x", "http://h:99999/x", "/x"])
def test_what_is_not_an_absolute_http_url_is_refused_every_time(url: str) -> None:
    transport = PooledTransport()
    for _ in range(2):
        with pytest.raises(ValueError):
            transport._resolve(url)


def test_each_origin_prefix_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a transport sending to several paths and queries under one base URL
    parsed: list[str] = []

    def counting(url: str) -> object:
        parsed.append(url)
        return urlsplit(url)

    monkeypatch.setattr(pooled_module, "urlsplit", counting)
    transport = PooledTransport()
    # When it resolves each request's URL
    origins = {transport._resolve(f"https://api.example.com/v2/orders/{i}?page={i}")[0] for i in range(5)}
    # Then only the prefix went through urlsplit, once, and every request shares its origin
    assert parsed == ["https://api.example.com"] and len(origins) == 1
