"""The public surface of ``bus`` is explicit: ``__all__`` is sorted and every name in it exists."""

from __future__ import annotations

import bus


def test_all_is_sorted_and_importable() -> None:
    assert bus.__all__ == sorted(bus.__all__)
    missing = [name for name in bus.__all__ if not hasattr(bus, name)]
    assert missing == []
