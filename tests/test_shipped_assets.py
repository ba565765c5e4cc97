"""The one shipped-asset helper (leverplus.core.shipped_assets): the digest every track's rules take covers the
recorded sha256 values only, so a bit-identical rebuild (new ``train_seconds``) reruns nothing -- including the
sentiment rule, which used to hash the whole BUILD.json -- while new weights change it; verify names the files."""

import json
import re
import shutil
import types
from pathlib import Path

import pytest

from leverplus.tracks.vqa.models import demo_assets
from leverplus.tracks.audio import assets as audio_assets
from leverplus.tracks.consistency import assets as consistency_assets
from leverplus.tracks.sentiment import assets as sentiment_assets
from leverplus.core import shipped_assets as sa

ROOT = Path(__file__).resolve().parents[1]
TRACKS = {"demo": demo_assets, "audio": audio_assets, "consistency": consistency_assets,
          "sentiment": sentiment_assets}


def _rebuilt(src: Path, dst: Path, *, timing: float = 1.0, weights: str | None = None) -> Path:
    """A copy of a shipped BUILD.json as a rebuild would write it: other timings, or other weights."""
    dst.mkdir(parents=True, exist_ok=True)
    rec = json.loads((src / "BUILD.json").read_text())
    for model in rec["models"].values():
        if "train_seconds" in model:
            model["train_seconds"] += timing
    if "build_seconds" in rec:
        rec["build_seconds"] += timing
    if weights:
        name = next(iter(rec["models"]))
        rec["models"][name]["sha256"][weights] = "0" * 64
    sa.write_build(dst, rec)
    return dst


def sentiment_rule_digest(assets_root: Path) -> str:
    """Run the sentiment rule's own params function (rules/sentiment_common.smk: sent_shipped) on a tree whose
    shipped assets are ``assets_root``."""
    src = (ROOT / "rules" / "sentiment_common.smk").read_text()
    body = re.search(r"^def sent_shipped\(w\):\n(?:(?:    .*)?\n)+", src, re.M).group(0)
    ns = {"SENT": {"models": {"tiny": {"source": "demo"}}}, "Path": Path,
          "workflow": types.SimpleNamespace(basedir=str(assets_root))}
    exec(body, ns)
    return ns["sent_shipped"](types.SimpleNamespace(sent_model="tiny"))


@pytest.mark.parametrize("track", list(TRACKS))
def test_every_track_digest_ignores_timings_and_follows_weights(track, tmp_path):
    mod = TRACKS[track]
    assert mod.shipped_digest() == sa.shipped_digest(mod.ASSETS) and len(mod.shipped_digest()) == 16
    same = _rebuilt(mod.ASSETS, tmp_path / "same", timing=12.5)
    assert mod.shipped_digest(same) == mod.shipped_digest()
    other = _rebuilt(mod.ASSETS, tmp_path / "other", weights="model.safetensors")
    assert mod.shipped_digest(other) != mod.shipped_digest()
    assert sa.verify(same, mod.ASSETS) == []
    assert sa.verify(other, mod.ASSETS) == [f"{next(iter(json.loads((other / 'BUILD.json').read_text())['models']))}"
                                            f"/model.safetensors"]
    assert mod.shipped_digest(tmp_path / "nothing") == "absent"


def test_sentiment_rule_does_not_rerun_on_a_bit_identical_rebuild(tmp_path):
    rel = Path("src/leverplus/assets/sentiment_models")
    shipped = tmp_path / "shipped"
    (shipped / rel).mkdir(parents=True)
    shutil.copy(sentiment_assets.ASSETS / "BUILD.json", shipped / rel / "BUILD.json")
    rebuilt = tmp_path / "rebuilt"
    _rebuilt(sentiment_assets.ASSETS, rebuilt / rel, timing=3.0)
    newweights = tmp_path / "new"
    _rebuilt(sentiment_assets.ASSETS, newweights / rel, weights="model.safetensors")
    assert sentiment_rule_digest(shipped) == sentiment_assets.shipped_digest()
    assert sentiment_rule_digest(rebuilt) == sentiment_rule_digest(shipped)  # train_seconds differs only
    assert sentiment_rule_digest(newweights) != sentiment_rule_digest(shipped)


def test_build_record_checks_and_atomic_write(tmp_path):
    (tmp_path / "BUILD.json").write_text('{"models": {"m": {"files": {}}}}')
    with pytest.raises(ValueError, match=r"BUILD.json: expected 'models'"):
        sa.shipped_digest(tmp_path)
    sa.write_build(tmp_path, {"models": {"m": {"sha256": {"a": "1"}}}, "note": "中文"})
    assert "中文" in (tmp_path / "BUILD.json").read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["BUILD.json"]  # no temporary file left
    assert sa.diff_digests({"m": {"a": "1", "b": "2"}}, {"m": {"a": "1", "c": "3"}}) == ["m/b", "m/c"]


def test_shipped_asset_bytes_unchanged():
    """Every shipped file still matches its BUILD.json record (the helper moved code, not bytes)."""
    for mod in TRACKS.values():
        rec = sa.read_build(mod.ASSETS)
        for name, model in rec["models"].items():
            assert sa.file_digests(mod.ASSETS / name) == model["sha256"], name
