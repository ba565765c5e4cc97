import json
import math
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from leverplus.core.io import atomic_write, canonical_json, read_json, write_json, write_parquet


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_text_and_binary(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target) as fh:
        fh.write("héllo\n")
        # nothing visible at the destination before the block ends
        assert not target.exists()
    assert target.read_text(encoding="utf-8") == "héllo\n"

    with atomic_write(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == [] and _leftovers(target.parent) == []


def test_atomic_write_keeps_old_content_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as fh:
            fh.write("partial new content")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_permissions_follow_umask(tmp_path):
    # mkstemp creates 0o600 files; the final file must get the usual umask-based mode
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_write(tmp_path / "f.txt") as fh:
        fh.write("x")
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="modes"):
        with atomic_write(tmp_path / "x", "a"):
            pass


def test_write_json_format_and_roundtrip(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"b": 1, "a": {"z": [1, 2], "y": "é"}, "p": Path("/tmp/q")})
    text = path.read_text(encoding="utf-8")
    assert text == (
        '{\n  "a": {\n    "y": "é",\n    "z": [\n      1,\n      2\n    ]\n  },\n  "b": 1,\n  "p": "/tmp/q"\n}\n'
    )
    assert read_json(path) == {"a": {"y": "é", "z": [1, 2]}, "b": 1, "p": "/tmp/q"}


def test_write_json_rejects_nan_and_leaves_nothing(tmp_path):
    path = tmp_path / "x.json"
    with pytest.raises(ValueError):
        write_json(path, {"v": math.nan})
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="set"):
        write_json(path, {"v": {1, 2}})


def test_canonical_json_is_compact_sorted_and_unicode():
    assert canonical_json({"b": [1, 2.5], "a": "ü", "c": {"y": None, "x": True}}) == (
        '{"a":"ü","b":[1,2.5],"c":{"x":true,"y":null}}'
    )
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})
    with pytest.raises(ValueError):
        canonical_json(float("inf"))


def test_canonical_json_numpy_scalars():
    np = pytest.importorskip("numpy")
    assert canonical_json({"n": np.int64(3), "a": np.arange(2)}) == '{"a":[0,1],"n":3}'
    assert json.loads(canonical_json({"f": np.float32(0.5)})) == {"f": 0.5}


def test_write_parquet_dataframe_and_table(tmp_path):
    df = pd.DataFrame({"id": ["1", "2"], "answers": [["a", "b"], ["c"]], "n": [1, 2]})
    write_parquet(tmp_path / "d.parquet", df)
    back = pq.read_table(tmp_path / "d.parquet")
    assert back.column_names == ["id", "answers", "n"]
    assert back.column("answers").to_pylist() == [["a", "b"], ["c"]]

    table = pa.table({"x": pa.array([1, 2], pa.int32())})
    write_parquet(tmp_path / "t.parquet", table)
    assert pq.read_table(tmp_path / "t.parquet").schema.field("x").type == pa.int32()
    assert _leftovers(tmp_path) == []


def test_write_parquet_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "d.parquet"
    write_parquet(path, pd.DataFrame({"a": [1]}))
    before = path.read_bytes()
    bad = pd.DataFrame({"a": [object()]})  # not convertible to Arrow
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError)):
        write_parquet(path, bad)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
