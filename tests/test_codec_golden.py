"""The codec against databases written by the Rust crate (tests/golden)."""
from __future__ import annotations

from pathlib import Path

import pytest

import golden
from tinylsm import sstable

SCENARIOS = golden.scenario_names()


def test_golden_data_present():
    assert len(SCENARIOS) >= 11, f"golden scenarios missing under {golden.GOLDEN}"


def _recover_with_codec(codec, scenario) -> tuple:
    """Recover a golden db with the codec alone, reading files in place."""
    k, v = scenario.key_size, scenario.value_size
    model = {}
    ssdir = scenario.db / "sstables"
    for name in sorted(p.name for p in ssdir.iterdir() if len(p.name) == 16):
        payload = sstable.decompress((ssdir / name).read_bytes(), str(ssdir / name))
        scan = codec.decode_sstable(payload, k, v)
        assert scan.status == "complete", (name, scan.status, scan.reason)
        assert scan.count == scan.expected
        _apply(model, codec.unpack_records(scan.records, k, v))
    scan = codec.scan_log((scenario.db / "log").read_bytes(), k, v)
    _apply(model, codec.unpack_records(scan.records, k, v))
    return model, scan


def _apply(model: dict, changes) -> None:
    for key, value in changes:
        if value is None:
            model.pop(key, None)
        else:
            model[key] = value


@pytest.mark.parametrize("name", SCENARIOS)
def test_scan_and_decode_give_expected_map(codec, name):
    scenario = golden.load(name)
    model, scan = _recover_with_codec(codec, scenario)
    assert model == scenario.data
    assert scan.end == scenario.log_bytes_after_recover
    if not scenario.damaged:
        assert scan.stop_offset == scenario.log_bytes == scan.end


def _ops_to_log(codec, scenario) -> bytes:
    k, v = scenario.key_size, scenario.value_size
    parts = []
    for op in scenario.ops:
        if op[0] in ("I", "R"):
            parts.append(codec.encode_frame(op[1], op[2], k, v))
        elif op[0] == "B":
            parts.append(codec.encode_log(op[1], k, v, batch=True))
        elif op[0] == "X":
            raise AssertionError("restart inside a log-only scenario")
    return b"".join(parts)


@pytest.mark.parametrize(
    "name", [n for n in SCENARIOS if not golden.load(n).sstables]
)
def test_encoding_ops_reproduces_golden_log(codec, name):
    scenario = golden.load(name)
    ours = _ops_to_log(codec, scenario)
    theirs = (scenario.db / "log").read_bytes()
    if scenario.damaged:
        # identical up to where the damage starts
        assert ours[: scenario.log_bytes_after_recover] == theirs[: scenario.log_bytes_after_recover]
        assert len(ours) >= scenario.log_bytes
    else:
        assert ours == theirs


def test_encode_log_per_item_matches_batchless_encoding(codec):
    scenario = golden.load("basic_k8_v8")
    singles = [op for op in scenario.ops if op[0] in ("I", "R")]
    one_call = codec.encode_log([(op[1], op[2]) for op in singles], 8, 8)
    assert one_call == (scenario.db / "log").read_bytes()


def test_golden_sstables_reencode_identically(codec):
    """Decoding a Rust sstable and encoding its records again gives the same
    payload: the record layout and checksums are the original's."""
    scenario = golden.load("sstables_k8_v8")
    for name in scenario.sstables:
        path: Path = scenario.db / "sstables" / name
        payload = sstable.decompress(path.read_bytes(), str(path))
        scan = codec.decode_sstable(payload, 8, 8)
        assert codec.encode_sstable(scan.records, 8, 8) == payload
        pairs = codec.unpack_records(scan.records, 8, 8)
        assert codec.pack_records(pairs, 8, 8) == scan.records
