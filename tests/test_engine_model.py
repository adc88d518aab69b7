"""Model-based test: the store and a dict, side by side, through restarts,
sstable flushes and merges (tiny max_log_length and merge_window); writes
one by one, by write_batch and by write_packed, reads by range and export."""
from __future__ import annotations

import shutil
import tempfile

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

import tinylsm

SIZES = [(1, 1), (2, 3), (8, 8), (16, 4), (12, 20)]


def make_machine(key_size: int, value_size: int):
    # a small key space so that overwrites, removes and resurrections happen
    keys = st.binary(min_size=key_size, max_size=key_size).map(
        lambda b: bytes([b[0] % 24]) + b[1:3].rjust(key_size - 1, b"\0")[-(key_size - 1):]
        if key_size > 1 else bytes([b[0] % 24])
    )
    values = st.binary(min_size=value_size, max_size=value_size)
    changes = st.lists(st.tuples(keys, st.one_of(st.none(), values)), max_size=12)

    class StoreMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.dir = tempfile.mkdtemp(prefix="tinylsm-model-")
            self.path = self.dir + "/db"
            self.config = tinylsm.Config(
                max_log_length=6 * (5 + max(8, key_size + value_size)),
                merge_window=2,
                merge_ratio=3,
                log_bufwriter_size=64,
            )
            self.db = tinylsm.open(self.path, key_size=key_size, value_size=value_size,
                                   config=self.config)
            self.model: dict = {}

        def teardown(self):
            try:
                self.db.close()
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)

        @rule(key=keys, value=values)
        def insert(self, key, value):
            assert self.db.insert(key, value) == self.model.get(key)
            self.model[key] = value

        @rule(key=keys)
        def remove(self, key):
            assert self.db.remove(key) == self.model.pop(key, None)

        @rule(items=changes)
        def write_batch(self, items):
            self.db.write_batch(items)
            for key, value in items:
                if value is None:
                    self.model.pop(key, None)
                else:
                    self.model[key] = value

        @rule(pairs=st.lists(st.tuples(keys, values), max_size=12),
              removals=st.none() | st.lists(keys, max_size=4))
        def write_packed(self, pairs, removals):
            self.db.write_packed(b"".join(k + v for k, v in pairs),
                                 None if removals is None else b"".join(removals))
            self.model.update(pairs)
            for key in removals or ():
                self.model.pop(key, None)

        @rule()
        def flush(self):
            self.db.flush()

        @rule()
        def reopen(self):
            self.db.close()
            self.db = tinylsm.open(self.path, key_size=key_size, value_size=value_size,
                                   config=self.config)

        @rule()
        def compact(self):
            self.db.compact()
            assert self.db.stats().sstables <= 1

        @rule(start=st.one_of(st.none(), keys), stop=st.one_of(st.none(), keys),
              reverse=st.booleans())
        def range_query(self, start, stop, reverse):
            want = sorted(
                (k, v) for k, v in self.model.items()
                if (start is None or k >= start) and (stop is None or k < stop)
            )
            if reverse:
                want.reverse()
            assert list(self.db.range(start, stop, reverse=reverse)) == want
            chunks = list(self.db.export(start, stop, reverse=reverse, chunk_records=5))
            assert b"".join(chunks) == b"".join(k + v for k, v in want)

        @invariant()
        def same_map(self):
            assert len(self.db) == len(self.model)
            assert list(self.db.items()) == sorted(self.model.items())
            stats = self.db.stats()
            assert stats.compaction_error is None
            assert stats.resident_bytes == len(self.model) * (key_size + value_size)

    StoreMachine.__name__ = f"StoreMachine_k{key_size}_v{value_size}"
    return StoreMachine


@pytest.mark.parametrize("key_size,value_size", SIZES, ids=[f"k{k}v{v}" for k, v in SIZES])
def test_store_matches_dict_model(key_size, value_size):
    run_state_machine_as_test(
        make_machine(key_size, value_size),
        settings=settings(
            settings(), stateful_step_count=40, max_examples=max(settings().max_examples // 2, 1)
        ),
    )
