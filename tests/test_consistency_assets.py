"""The shipped consistency demo models match their BUILD.json (sha256 of every file); rebuilding them with
`python -m leverplus.models.consistency_assets` reproduces those files bit for bit (checked once by hand, see
docs/consistency.md: it takes minutes, so it is not part of the suite)."""
from __future__ import annotations

import json

from leverplus.data.download import file_digest
from leverplus.models.consistency_assets import ASSETS, EMBEDDER, RERANKER


def test_shipped_files_match_build_record():
    build = json.loads((ASSETS / "BUILD.json").read_text())
    assert set(build["models"]) == {EMBEDDER, RERANKER}
    for name, rec in build["models"].items():
        shipped = {p.name for p in (ASSETS / name).iterdir()}
        assert shipped == set(rec["sha256"]), name
        for fname, digest in rec["sha256"].items():
            assert file_digest(ASSETS / name / fname) == digest, f"{name}/{fname}"
    size = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert size < 3 * 2**20
