"""The key, item and value views of a store: ordered, through the map's
iterators (keys: the store's ``__iter__``; items and values: ``range()``)."""
from __future__ import annotations

from collections.abc import ItemsView, KeysView, ValuesView
from typing import TYPE_CHECKING, Iterator, Tuple

if TYPE_CHECKING:
    from .lsm import Lsm


class Keys(KeysView[bytes]):
    _mapping: Lsm  # set by KeysView.__init__ (typeshed does not declare it)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._mapping)  # the store's own key iterator


class Items(ItemsView[bytes, bytes]):
    _mapping: Lsm

    def __iter__(self) -> Iterator[Tuple[bytes, bytes]]:
        return self._mapping.range()


class Values(ValuesView[bytes]):
    _mapping: Lsm

    def __iter__(self) -> Iterator[bytes]:
        for _, value in self._mapping.range():
            yield value
