"""Audio loading (16 kHz mono float32, clear errors) and the audio-set loaders (SECap wav.scp + fid2captions.json,
generic manifests): every bad input stops with a message naming the file and the problem."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from leverplus.tracks.audio.audio_io import AudioInputError, load_audio, resample
from leverplus.tracks.audio.sets import AudioSetError, load_manifest, load_secap, prepare_audio_set, read_wav_scp


def _tone(sr, seconds=0.5, f=440.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * f * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def test_load_audio_resamples_to_16k_mono(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, _tone(44100, channels=2), 44100, subtype="PCM_16")
    wav = load_audio(p)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == 8000  # 0.5 s at 16 kHz
    # the tone survives the polyphase filter: spectrum peak at 440 Hz
    spec = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spec) * 16000 / len(wav) - 440) < 4


def test_load_audio_16k_is_untouched(tmp_path):
    x = _tone(16000).astype(np.float32)
    p = tmp_path / "b.flac"
    sf.write(p, x, 16000, subtype="PCM_24")
    np.testing.assert_allclose(load_audio(p), x, atol=1e-6)


def test_resample_8k_length():
    assert len(resample(np.zeros(8000, np.float32), 8000)) == 16000


@pytest.mark.parametrize("case", ["missing", "empty", "garbage", "dir", "no_frames"])
def test_load_audio_errors_name_the_file(tmp_path, case):
    p = tmp_path / f"{case}.wav"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "garbage":
        p.write_text("this is not audio at all" * 10)
    elif case == "dir":
        p.mkdir()
    elif case == "no_frames":
        sf.write(p, np.zeros((0,), np.float32), 16000)
    with pytest.raises(AudioInputError) as e:
        load_audio(p)
    assert str(p) in str(e.value)
    assert {"missing": "not found", "empty": "empty", "garbage": "not a readable audio", "dir": "directory",
            "no_frames": "no samples"}[case] in str(e.value)


def _secap(tmp_path, captions=None, scp_lines=None):
    (tmp_path / "wavs").mkdir(parents=True, exist_ok=True)
    for f in ("c1", "c2"):
        sf.write(tmp_path / "wavs" / f"{f}.wav", _tone(16000, 0.2), 16000)
    scp = tmp_path / "wav.scp"
    scp.write_text("\n".join(scp_lines or ["c1 wavs/c1.wav", "", "# comment", f"c2 {tmp_path}/wavs/c2.wav"]) + "\n")
    cap = tmp_path / "fid2captions.json"
    cap.write_text(json.dumps(captions or {"c1": "说话人很高兴", "c2": ["语气低沉，很悲伤"]}, ensure_ascii=False))
    return scp, cap


def test_secap_loader(tmp_path):
    scp, cap = _secap(tmp_path)
    df = load_secap(scp, cap)
    assert list(df["id"]) == ["c1", "c2"]
    assert df["references"].tolist() == [["说话人很高兴"], ["语气低沉，很悲伤"]]
    assert all(p.startswith(str(tmp_path)) for p in df["audio"])


@pytest.mark.parametrize("bad, fragment", [
    ({"scp": ["c1"]}, "expected '<fid> <wav path>'"),
    ({"scp": ["c1 wavs/c1.wav", "c1 wavs/c2.wav"]}, "duplicate fid"),
    ({"scp": ["c1 wavs/nope.wav"]}, "audio file not found"),
    ({"scp": ["c1 sox x.wav -t wav - |"]}, "piped commands"),
    ({"captions": {"c1": "好"}}, "no caption for 1 fid"),
    ({"captions": {"c1": "", "c2": "好"}}, "empty reference"),
    ({"captions": {"c1": 3, "c2": "好"}}, "references must be"),
])
def test_secap_errors(tmp_path, bad, fragment):
    scp, cap = _secap(tmp_path, captions=bad.get("captions"), scp_lines=bad.get("scp"))
    with pytest.raises(AudioSetError, match=fragment) as e:
        load_secap(scp, cap)
    assert str(tmp_path) in str(e.value)


def test_secap_bad_json(tmp_path):
    scp, cap = _secap(tmp_path)
    cap.write_text("{not json")
    with pytest.raises(AudioSetError, match="not valid JSON") as e:
        load_secap(scp, cap)
    assert "fid2captions.json" in str(e.value)


def test_manifest_jsonl_and_parquet(tmp_path):
    sf.write(tmp_path / "x.wav", _tone(22050, 0.1), 22050)
    rows = [{"id": 1, "audio": "x.wav", "references": ["甲乙"]}, {"id": 2, "audio": "x.wav", "references": "丙丁"}]
    j = tmp_path / "m.jsonl"
    j.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    df = load_manifest(j)
    assert list(df["id"]) == ["1", "2"] and df["references"].tolist() == [["甲乙"], ["丙丁"]]
    import pandas as pd

    pq = tmp_path / "m.parquet"
    pd.DataFrame([{**r, "references": [r["references"]] if isinstance(r["references"], str) else r["references"]}
                  for r in rows]).to_parquet(pq)
    assert load_manifest(pq)["references"].tolist() == [["甲乙"], ["丙丁"]]


@pytest.mark.parametrize("content, fragment", [
    ('{"id": 1, "audio": "x.wav"}\n', "missing column"),
    ('{"id": 1, "audio": "nope.wav", "references": ["a"]}\n', "audio file not found"),
    ('{"id": 1, "audio": "x.wav", "references": []}\n', "references must be"),
    ('{"id": 1, "audio": "x.wav", "references": ["a"]}\n{"id": 1, "audio": "x.wav", "references": ["b"]}\n',
     "duplicate id"),
    ("not json\n", "m.jsonl"),
])
def test_manifest_errors(tmp_path, content, fragment):
    sf.write(tmp_path / "x.wav", _tone(16000, 0.1), 16000)
    m = tmp_path / "m.jsonl"
    m.write_text(content)
    with pytest.raises(AudioSetError, match=fragment) as e:
        load_manifest(m)
    assert "m.jsonl" in str(e.value)


def test_prepare_secap_local_and_no_partial_output(tmp_path):
    scp, cap = _secap(tmp_path)
    out = tmp_path / "out" / "eval.jsonl"
    info = prepare_audio_set({"source": "secap", "path": str(tmp_path), "subdir": "", "wav_scp": "wav.scp",
                              "captions": "fid2captions.json", "limit": None}, out, raw_root=tmp_path / "raw")
    assert info["n_eval"] == 2 and len(load_manifest(out)) == 2
    cap.write_text("{}")
    out2 = tmp_path / "out2" / "eval.jsonl"
    with pytest.raises(AudioSetError):
        prepare_audio_set({"source": "secap", "path": str(tmp_path)}, out2, raw_root=tmp_path / "raw")
    assert not out2.exists()


def _secap_published(root: Path, fids=("tx_emotion_00201000015", "tx_emulate_00_103_0001_000017"),
                     captions=("悲伤逆流成河", "伤心难过，声音颤抖，情绪激动失望"), bom: bool = False) -> Path:
    """A generated set in SECap's published layout (github.com/thuhcsi/SECap @ 1743904eb9bc2217eba492c8b728d5787484ce22):
    dataset/wav.scp lines `<fid> dataset/wav/<fid>.wav` (relative to the repository root, which SECap's
    dataloader/dataloader.py joins them with), dataset/fid2captions.json (an indented object, one caption per fid),
    dataset/text.txt, and 24 kHz mono 16-bit WAVs under dataset/wav/."""
    ds = root / "dataset"
    (ds / "wav").mkdir(parents=True, exist_ok=True)
    (root / "dataloader").mkdir(exist_ok=True)
    for f in fids:
        sf.write(ds / "wav" / f"{f}.wav", _tone(24000, 0.3), 24000, subtype="PCM_16")
    scp = "".join(f"{f} dataset/wav/{f}.wav\n" for f in fids)
    (ds / "wav.scp").write_bytes(("\ufeff" if bom else "").encode() + scp.encode("utf-8"))
    (ds / "fid2captions.json").write_text(json.dumps(dict(zip(fids, captions)), ensure_ascii=False, indent=4),
                                          encoding="utf-8")
    (ds / "text.txt").write_text("".join(f"{f} 一年又一年。 \n" for f in fids), encoding="utf-8")
    return root


def test_secap_published_layout_accepted_as_is(tmp_path):
    """Issue 24 item 1: SECap's own layout, unedited, with the repository root as `path` (the defaults)."""
    root = _secap_published(tmp_path / "SECap")
    out = tmp_path / "out" / "eval.jsonl"
    info = prepare_audio_set({"source": "secap", "path": str(root)}, out, raw_root=tmp_path / "raw")
    assert info["n_eval"] == 2
    df = load_manifest(out)
    assert list(df["id"]) == ["tx_emotion_00201000015", "tx_emulate_00_103_0001_000017"]
    assert df["audio"].tolist() == [str((root / "dataset" / "wav" / f"{f}.wav").resolve()) for f in df["id"]]
    assert df["references"].tolist() == [["悲伤逆流成河"], ["伤心难过，声音颤抖，情绪激动失望"]]
    from leverplus.tracks.audio.audio_io import load_audio

    assert load_audio(df["audio"].iloc[0]).shape == (int(0.3 * 16000),)  # 24 kHz read and resampled


def test_secap_wrong_base_names_both_and_the_switch(tmp_path):
    """Read against wav.scp's folder, SECap's paths do not exist; the error names the path it tried. A Kaldi set
    whose paths are relative to wav.scp's folder, read as root-relative, points to `relative_to: wav_scp`."""
    root = _secap_published(tmp_path / "SECap")
    with pytest.raises(AudioSetError, match="dataset/dataset/wav") as e:
        prepare_audio_set({"source": "secap", "path": str(root), "relative_to": "wav_scp"},
                          tmp_path / "o" / "eval.jsonl", raw_root=tmp_path / "raw")
    assert "wav.scp" in str(e.value)
    kaldi = tmp_path / "kaldi"
    scp, cap = _secap(kaldi / "sub", scp_lines=["c1 wavs/c1.wav", "c2 wavs/c2.wav"])
    spec = {"source": "secap", "path": str(kaldi), "wav_scp": "sub/wav.scp", "captions": "sub/fid2captions.json"}
    with pytest.raises(AudioSetError, match="relative_to: wav_scp"):
        prepare_audio_set(spec, tmp_path / "o2" / "eval.jsonl", raw_root=tmp_path / "raw")
    assert prepare_audio_set({**spec, "relative_to": "wav_scp"}, tmp_path / "o3" / "eval.jsonl",
                             raw_root=tmp_path / "raw")["n_eval"] == 2


def test_wav_scp_byte_order_mark_is_not_part_of_the_first_fid(tmp_path):
    root = _secap_published(tmp_path / "SECap", bom=True)
    wavs = read_wav_scp(root / "dataset" / "wav.scp", relative_to=root)
    assert list(wavs)[0] == "tx_emotion_00201000015"


def test_prepare_secap_by_url_with_checksum(tmp_path):
    """SECap fetched as an archive of its repository from a URL (a local HTTP server) with its sha256, extracted,
    then loaded in its published layout; a wrong checksum stops before anything is written."""
    import hashlib
    import tarfile

    from httpserver import serve_directory

    src = _secap_published(tmp_path / "src")
    (tmp_path / "srv").mkdir()
    archive = tmp_path / "srv" / "secap.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="SECap-main")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    with serve_directory(tmp_path / "srv") as srv:
        spec = {"source": "secap", "url": srv.url_for("secap.tar.gz"), "sha256": sha, "subdir": "SECap-main"}
        out = tmp_path / "out" / "eval.jsonl"
        assert prepare_audio_set(spec, out, raw_root=tmp_path / "raw")["n_eval"] == 2
        from leverplus.core.download import ChecksumError

        bad = tmp_path / "bad" / "eval.jsonl"
        with pytest.raises(ChecksumError):
            prepare_audio_set({**spec, "sha256": "0" * 64}, bad, raw_root=tmp_path / "raw2")
        assert not bad.exists()


def test_wav_scp_missing(tmp_path):
    with pytest.raises(AudioSetError, match="wav.scp not found"):
        read_wav_scp(tmp_path / "wav.scp")


# ---- bad input that used to load silently (issue 24 item 8) ------------------------------------------------------
def test_truncated_wav_is_refused_with_both_lengths(tmp_path):
    full = tmp_path / "full.wav"
    sf.write(full, _tone(16000, 1.0), 16000, subtype="PCM_16")  # header: 16000 frames
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:44 + 4000 * 2])  # 4000 frames present
    assert load_audio(full).shape == (16000,)
    with pytest.raises(AudioInputError, match="16000 frames declared, 4000 present") as e:
        load_audio(cut)
    assert "cut.wav" in str(e.value)


def test_antiphase_stereo_is_refused_not_averaged_to_silence(tmp_path):
    x = _tone(16000, 0.5)
    p = tmp_path / "anti.wav"
    sf.write(p, np.stack([x, -x], axis=1), 16000)
    with pytest.raises(AudioInputError, match="cancel"):
        load_audio(p)
    q = tmp_path / "stereo.wav"  # ordinary stereo still averages
    sf.write(q, np.stack([x, 0.5 * x], axis=1), 16000)
    assert np.allclose(load_audio(q), 0.75 * x, atol=1e-4)


def test_integer_arrays_are_not_passed_to_the_captioner_unscaled():
    from leverplus.tracks.audio.omni import _check_audio

    pcm = (_tone(16000, 0.1) * 32767).astype(np.int16)
    with pytest.raises(ValueError, match="int16"):
        _check_audio(pcm)
    assert _check_audio(pcm.astype(np.float32) / 32768).dtype == np.float32


def test_secap_config_names_secaps_own_similarity_model():
    """SECap's tool/get_sentence_simi.py (@ 1743904e) loads text2vec-base-chinese-PARAPHRASE, not text2vec-base-chinese."""
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[3] / "config/audio_secap.yaml").read_text())["audio"]
    name = cfg["datasets"]["secap"]["metrics"]["similarity_model"]
    assert cfg["metric_models"][name]["repo_id"] == "shibing624/text2vec-base-chinese-paraphrase"
    assert cfg["metric_models"][name]["pooling"] == "mean"


# ---- the demo's references are free-form (issue 24 item 7) -------------------------------------------------------
def test_demo_references_are_free_form_like_secap(tmp_path):
    """SECap's 600 references hold 536 distinct captions; the demo's used to be 40 templates (every pair of clips
    with the same emotion and gender shared them), on which the document's evaluation and the fair one could not
    come apart. Now nearly every reference is distinct, several sentence frames and emotion synonyms occur, and
    each still names exactly the clip's emotion and gender."""
    from leverplus.tracks.audio.demo import caption_emotion, caption_gender, generate_demo

    generate_demo(tmp_path, seed=0, n_train=0, n_val=120)
    rows = [json.loads(line) for line in (tmp_path / "val.jsonl").read_text(encoding="utf-8").splitlines()]
    refs = [r for row in rows for r in row["references"]]
    assert len(refs) == 240 and len(set(refs)) >= 0.95 * len(refs)
    for row in rows:
        assert len(set(row["references"])) == 2
        for r in row["references"]:
            assert caption_emotion(r) == row["emotion"] and caption_gender(r) == row["gender"], r
    # synonyms, not only the emotion's own word: the canonical word is absent from a good share of references
    from leverplus.tracks.audio.demo import EMOTION_WORDS

    assert sum(row["emotion"] not in r for row in rows for r in row["references"]) >= 0.5 * len(refs)
    used = {w for r in refs for ws in EMOTION_WORDS.values() for w in ws if w in r}
    assert len(used) >= 20
    assert min(len(r) for r in refs) >= 5 and np.mean([len(r) for r in refs]) > 10
