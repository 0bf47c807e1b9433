"""Load oscrypto (pyas2lib's crypto backend) on OpenSSL versions with a two-digit part (3.0.10 and later).

oscrypto 1.3.0, the last release on PyPI, finds the libcrypto version with the pattern ``\\d\\.\\d\\.\\d`` and
refuses to load when it reads "OpenSSL 3.0.19" (wbond/oscrypto issues 75 and 78; fixed on its master, never
released). The fix is that one pattern, so this module loads oscrypto's two libcrypto binding modules with the
corrected pattern and leaves everything else as shipped. A fixed oscrypto release makes it a no-op.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import CodeType, ModuleType

__all__ = ["install"]

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
