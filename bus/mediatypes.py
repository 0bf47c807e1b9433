"""Media types a webhook endpoint accepts, shared by the webhook server and the adapters that declare them."""

from __future__ import annotations

__all__ = ["MEDIA_TYPES", "media_type_allowed"]

#: Media types accepted for each ``content_type`` setting; ``+json`` / ``+xml`` suffixes match too.
MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "json": ("application/json", "text/json", "+json"),
    "xml": ("application/xml", "text/xml", "+xml"),
    "form": ("application/x-www-form-urlencoded",),
}


def media_type_allowed(content_type: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a ``Content-Type`` header value is one of ``allowed`` (``+suffix`` entries match suffixes)."""
    if not allowed or content_type is None or not content_type.strip():
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    for entry in allowed:
        if entry.startswith("+"):
            if media.endswith(entry):
                return True
        elif media == entry:
            return True
    return False
