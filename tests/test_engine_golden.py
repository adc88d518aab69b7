"""The engine opens the Rust crate's databases, and writes ones it can read."""
from __future__ import annotations

import os

import pytest

import golden
from workload import run_op
import tinylsm
from tinylsm import sstable
from tinylsm._backend import codec

SCENARIOS = golden.scenario_names()


@pytest.mark.parametrize("name", SCENARIOS)
def test_golden_directory_opens_to_expected_map(tmp_path, name, chunk_size):
    scenario = golden.load(name)
    db_dir = golden.copy_db(scenario, tmp_path)
    with tinylsm.open(db_dir, key_size=scenario.key_size, value_size=scenario.value_size) as db:
        assert dict(db.items()) == scenario.data
        assert list(db.keys()) == sorted(scenario.data)
        assert len(db) == len(scenario.data)
    assert os.path.getsize(db_dir / "log") == scenario.log_bytes_after_recover
    # the recorded sizes now protect the directory from a wrong reopening
    with pytest.raises(ValueError, match="created with key_size"):
        tinylsm.open(db_dir, key_size=scenario.key_size + 1, value_size=scenario.value_size)


@pytest.mark.parametrize("name", ["sstables_k8_v8", "batches_k8_v8"])
def test_replaying_golden_ops_gives_expected_map(tmp_path, name):
    scenario = golden.load(name)
    config = tinylsm.Config(**scenario.config)
    k, v = scenario.key_size, scenario.value_size
    path = tmp_path / "db"
    db = tinylsm.open(path, key_size=k, value_size=v, config=config)
    for op in scenario.ops:
        if op[0] == "S":  # a pause for the Rust crate's merges: flush instead
            db.flush()
        elif op[0] == "X":
            db.close()
            db = tinylsm.open(path, key_size=k, value_size=v, config=config)
        else:
            run_op(db, op)
    assert dict(db.items()) == scenario.data
    db.close()
    with tinylsm.open(path, key_size=k, value_size=v) as again:
        assert dict(again.items()) == scenario.data


def test_tinylsm_directory_reads_back_with_codec_alone(tmp_path):
    """What tinylsm writes is tiny-lsm's format: log frames and sstables
    decode with the codec and zstd alone to exactly the expected map."""
    path = tmp_path / "db"
    model = {}
    config = tinylsm.Config(max_log_length=2000, merge_window=2)
    with tinylsm.open(path, key_size=4, value_size=12, config=config) as db:
        for i in range(600):
            key = (i * 7919 % 997).to_bytes(4, "big")
            if i % 5 == 4:
                db.remove(key)
                model.pop(key, None)
            else:
                value = i.to_bytes(12, "little")
                db.insert(key, value)
                model[key] = value
            if i % 50 == 0:
                db.write_batch([(key, None), (key[::-1], b"b" * 12)])
                model.pop(key, None)
                model[key[::-1]] = b"b" * 12
        db.compact()
        for i in range(30):
            db.insert(i.to_bytes(4, "big"), b"L" * 12)
            model[i.to_bytes(4, "big")] = b"L" * 12
    names = sorted(os.listdir(path / "sstables"))
    assert names, "expected at least one sstable"
    recovered = {}
    for name in names:
        assert len(name) == 16 and int(name, 16) >= 1
        data = (path / "sstables" / name).read_bytes()
        scan = codec.decode_sstable(sstable.decompress(data, name), 4, 12)
        assert scan.status == "complete"
        for key, value in codec.unpack_records(scan.records, 4, 12):
            if value is None:
                recovered.pop(key, None)
            else:
                recovered[key] = value
    scan = codec.scan_log((path / "log").read_bytes(), 4, 12)
    assert scan.end == os.path.getsize(path / "log")
    for key, value in codec.unpack_records(scan.records, 4, 12):
        if value is None:
            recovered.pop(key, None)
        else:
            recovered[key] = value
    assert recovered == model
