"""The key, item and value views of a store: ordered, through the map's
iterators (keys: the store's ``__iter__``; items and values: ``range()``)."""
from __future__ import annotations

from collections.abc import ItemsView, KeysView, ValuesView
from typing import Iterator, Tuple


class Keys(KeysView):
    def __iter__(self) -> Iterator[bytes]:
        return iter(self._mapping)  # the store's own key iterator


class Items(ItemsView):
    def __iter__(self) -> Iterator[Tuple[bytes, bytes]]:
        return self._mapping.range()  # type: ignore[attr-defined,no-any-return]


class Values(ValuesView):
    def __iter__(self) -> Iterator[bytes]:
        for _, value in self._mapping.range():  # type: ignore[attr-defined]
            yield value
