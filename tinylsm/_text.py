"""Counts in messages: "1 frame", "2 frames", "1,000 keys"."""
from __future__ import annotations


def noun(n: int, word: str) -> str:
    """``word`` for a count of ``n``: plural unless ``n`` is 1."""
    return word if n == 1 else word + "s"


def plural(n: int, word: str) -> str:
    """``n`` (with thousands separators) and ``word``, plural unless 1."""
    return f"{n:,} {noun(n, word)}"
