"""Audio loading (16 kHz mono float32, clear errors) and the audio-set loaders (SECap wav.scp + fid2captions.json,
generic manifests): every bad input stops with a message naming the file and the problem."""
import json

import numpy as np
import pytest
import soundfile as sf

from leverplus.data.audio_io import AudioInputError, load_audio, resample
from leverplus.data.audio_sets import AudioSetError, load_manifest, load_secap, prepare_audio_set, read_wav_scp


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
    (tmp_path / "wavs").mkdir(exist_ok=True)
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


def test_prepare_secap_by_url_with_checksum(tmp_path):
    """SECap fetched as an archive from a URL (a local HTTP server) with its sha256, extracted, then loaded;
    a wrong checksum stops before anything is written."""
    import hashlib
    import tarfile

    from httpserver import serve_directory

    src = tmp_path / "src"
    src.mkdir()
    _secap(src)
    (tmp_path / "srv").mkdir()
    archive = tmp_path / "srv" / "secap.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="SECap_test")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    with serve_directory(tmp_path / "srv") as srv:
        spec = {"source": "secap", "url": srv.url_for("secap.tar.gz"), "sha256": sha, "subdir": "SECap_test"}
        out = tmp_path / "out" / "eval.jsonl"
        assert prepare_audio_set(spec, out, raw_root=tmp_path / "raw")["n_eval"] == 2
        from leverplus.data.download import ChecksumError

        bad = tmp_path / "bad" / "eval.jsonl"
        with pytest.raises(ChecksumError):
            prepare_audio_set({**spec, "sha256": "0" * 64}, bad, raw_root=tmp_path / "raw2")
        assert not bad.exists()


def test_wav_scp_missing(tmp_path):
    with pytest.raises(AudioSetError, match="wav.scp not found"):
        read_wav_scp(tmp_path / "wav.scp")
