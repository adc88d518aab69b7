"""Model-based test with crashes and power cuts as steps.

A Hypothesis state machine drives the store and a ``dict`` side by side, as
``test_engine_model.py`` does, and adds: a process crash (the store is
abandoned, its directory reopened as the dead process left it), a power cut
(the ``FaultyFiles`` power-cut state is reopened), and a crash at the n-th
file operation of a burst of writes, sstable flushes and merges.  After
each, the map must be the model after some prefix of the operations issued
since the last acknowledged one (``flush``, ``compact``) -- batches
(``write_batch``, ``write_packed``) whole.
The compaction thread is off; merges are steps of their own.
"""
from __future__ import annotations

import shutil
import tempfile
from unittest import mock

import hypothesis.strategies as st
import pytest
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tinylsm._worker import Worker
from faults import Crash, FaultyFiles, abandon
from workload import apply, contents, open_db, packed, run_op

SIZES = [(8, 10), (2, 3)]


def make_machine(k: int, v: int):
    keys = st.integers(0, 15).map(lambda i: i.to_bytes(k, "big"))
    values = st.binary(min_size=v, max_size=v)
    ops = st.one_of(
        st.tuples(st.just("I"), keys, values),
        st.tuples(st.just("R"), keys),
        st.tuples(st.just("B"), st.lists(st.tuples(keys, st.one_of(st.none(), values)),
                                         max_size=6)),
        st.builds(packed, st.lists(st.tuples(keys, values), max_size=6),
                  st.none() | st.lists(keys, max_size=3)),
    )
    config = dict(max_log_length=4 * (5 + max(8, k + v)), merge_window=2, merge_ratio=3,
                  max_space_amp=3, log_bufwriter_size=2 * (5 + max(8, k + v)))

    class CrashMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.tmp = tempfile.mkdtemp(prefix="tinylsm-crash-model-")
            self.generation = 0
            self.models = [{}]  # models[0] is acknowledged; the rest issued since
            self._open(self.tmp + "/db0")

        def _open(self, path: str) -> None:
            self.path = path
            self.files = FaultyFiles(root=path)
            self.db = open_db(path, k, v, files=self.files, **config)

        def teardown(self) -> None:
            abandon(self.db)
            shutil.rmtree(self.tmp, ignore_errors=True)

        def _issue(self, op) -> None:
            model = dict(self.models[-1])
            apply(model, op)
            self.models.append(model)
            run_op(self.db, op)

        def _ack(self) -> None:
            self.models = [self.models[-1]]

        def _recover(self, power: bool) -> None:
            self.files.dead = True
            abandon(self.db)
            self.generation += 1
            new = f"{self.tmp}/db{self.generation}"
            if power:
                self.files.power_cut(new)
            else:
                shutil.copytree(self.path, new)
            shutil.rmtree(self.path)
            self._open(new)
            got = contents(self.db)
            assert got in self.models, (
                f"{'power cut' if power else 'crash'}: the map is not the model after "
                f"any prefix of the {len(self.models) - 1} operations issued since the "
                "last acknowledged one"
            )
            self.models = [got]

        @rule(op=ops)
        def write(self, op):
            self._issue(op)

        @rule()
        def flush(self):
            self.db.flush()
            self._ack()

        @rule()
        def compact(self):
            self.db.compact()
            self._ack()

        @rule()
        def merge_step(self):
            self.db._compactor.maintain()  # what the thread would do

        @rule(power=st.booleans())
        def crash(self, power):
            self._recover(power)

        @rule(burst=st.lists(st.one_of(ops, st.just(("F",)), st.just(("C",))), min_size=1,
                             max_size=8),
              n=st.integers(1, 60), power=st.booleans())
        def crash_during(self, burst, n, power):
            self.files.crash_at(n)
            try:
                for op in burst:
                    if op[0] == "F":
                        self.db.flush()
                        self._ack()
                    elif op[0] == "C":
                        self.db.compact()
                        self._ack()
                    else:
                        self._issue(op)
            except Crash:
                self._recover(power)
            else:
                self.files.crash_at(None)

        @invariant()
        def same_map(self):
            assert contents(self.db) == self.models[-1]

    return CrashMachine


@pytest.mark.parametrize("k,v", SIZES, ids=lambda x: str(x))
def test_crash_model(k, v):
    with mock.patch.object(Worker, "start", lambda self: None):
        run_state_machine_as_test(make_machine(k, v))
