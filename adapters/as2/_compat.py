"""Two shims for pyas2lib: load its crypto backend on current OpenSSL, and bound decompression.

**oscrypto on OpenSSL 3.0.10 and later.**
oscrypto 1.3.0, the last release on PyPI, finds the libcrypto version with the pattern ``\\d\\.\\d\\.\\d`` and
refuses to load when it reads "OpenSSL 3.0.19" (wbond/oscrypto issues 75 and 78; fixed on its master, never
released). The fix is that one pattern, so this module loads oscrypto's two libcrypto binding modules with the
corrected pattern and leaves everything else as shipped. A fixed oscrypto release makes it a no-op.

**Decompression bombs.** :func:`harden` gives pyas2lib a decompression that stops at :data:`MAX_DECOMPRESSED`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import zlib
from collections.abc import Sequence
from contextvars import ContextVar
from types import CodeType, ModuleType

__all__ = ["MAX_DECOMPRESSED", "bounded_decompress", "harden", "install"]

_MODULES = ("oscrypto._openssl._libcrypto_cffi", "oscrypto._openssl._libcrypto_ctypes")
_OLD = "'\\\\b(\\\\d\\\\.\\\\d\\\\.\\\\d[a-z]*)\\\\b'"
_NEW = "'\\\\b(\\\\d+\\\\.\\\\d+\\\\.\\\\d+[a-z]*)\\\\b'"


class _PatchedLoader(importlib.machinery.SourceFileLoader):
    def get_data(self, path: str) -> bytes:
        data = super().get_data(path)
        if path.endswith(".py"):
            return data.replace(_OLD.encode(), _NEW.encode())
        return data

    def get_code(self, fullname: str) -> CodeType:
        # Compile from the patched source, never from a cached .pyc of the shipped one.
        source = self.get_data(self.get_filename(fullname))
        return compile(source, self.get_filename(fullname), "exec", dont_inherit=True)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        loader = _PatchedLoader(fullname, spec.loader.path)
        return importlib.util.spec_from_file_location(fullname, spec.loader.path, loader=loader)


_installed = False


def install() -> None:
    """Put the finder in front of the import system once, before oscrypto is first imported."""
    global _installed
    if _installed or "oscrypto._openssl._libcrypto" in sys.modules:
        return
    sys.meta_path.insert(0, _Finder())
    _installed = True


#: The most bytes a compressed AS2 message may expand to (set per call by the receiving adapter).
MAX_DECOMPRESSED: ContextVar[int] = ContextVar("as2_max_decompressed", default=64 * 1024 * 1024)


def bounded_decompress(compressed_data: bytes) -> bytes:
    """pyas2lib's ``decompress_message`` with a ceiling: a few KiB of zlib can expand to gigabytes (a
    decompression bomb), and pyas2lib would inflate it all in memory before anyone looked at it."""
    from asn1crypto import cms
    from pyas2lib.exceptions import DecompressionError

    try:
        content = cms.ContentInfo.load(compressed_data)
        if content["content_type"].native != "compressed_data":
            raise DecompressionError("Compressed data not found in ASN.1")
        packed = content["content"]["encap_content_info"]["content"].native
    except DecompressionError:
        raise
    except Exception as exc:  # asn1crypto raises ValueError/TypeError/KeyError on garbage
        raise DecompressionError(f"Decompression failed with cause: {exc}") from exc
    limit = MAX_DECOMPRESSED.get()
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(packed, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise DecompressionError(f"decompressed content exceeds the limit of {limit} bytes")
        out += inflater.flush()
    except zlib.error as exc:
        raise DecompressionError(f"Decompression failed with cause: {exc}") from exc
    if len(out) > limit:
        raise DecompressionError(f"decompressed content exceeds the limit of {limit} bytes")
    return bytes(out)


def harden() -> None:
    """Make pyas2lib decompress within :data:`MAX_DECOMPRESSED` (it looks the function up in its module)."""
    import pyas2lib.as2

    pyas2lib.as2.decompress_message = bounded_decompress
