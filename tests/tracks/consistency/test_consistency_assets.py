"""The shipped consistency demo models match their BUILD.json (sha256 of every file); rebuilding them with
`python -m leverplus.tracks.consistency.assets` reproduces those files bit for bit (checked once by hand, see
docs/consistency.md: it takes minutes, so it is not part of the suite)."""
from __future__ import annotations

import json

from leverplus.core.download import file_digest
from leverplus.tracks.consistency.assets import ASSETS, EMBEDDER, RERANKER


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


def test_build_record_matches_the_builders_settings_and_verify_compares_digests(tmp_path):
    """`--verify` rebuilds from the module's settings: they must be the ones the shipped files were built with; and
    `verify` reports exactly the files whose sha256 differ (the rebuild itself takes minutes: checked by hand,
    docs/consistency.md)."""
    import shutil

    from leverplus.tracks.consistency import assets as ca

    build = json.loads((ASSETS / "BUILD.json").read_text())
    assert build["models"][RERANKER]["steps"] == ca.RERANK_STEPS and build["models"][EMBEDDER]["steps"] == ca.EMBED_STEPS
    assert build["models"][RERANKER]["init"].startswith(EMBEDDER) and build["lr"] == ca.LR and build["size"] == ca.SIZE
    shutil.copy(ASSETS / "BUILD.json", tmp_path / "BUILD.json")
    assert ca.verify(tmp_path) == []
    changed = json.loads((tmp_path / "BUILD.json").read_text())
    changed["models"][RERANKER]["sha256"]["model.safetensors"] = "0" * 64
    (tmp_path / "BUILD.json").write_text(json.dumps(changed))
    assert ca.verify(tmp_path) == [f"{RERANKER}/model.safetensors"]
