"""HTTP download, extraction, resource manifest and model materialisation, all against 127.0.0.1."""

import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from httpserver import serve_directory, serve_fake_hf_hub
from leverplus.core.download import (
    MANIFEST_NAME,
    ChecksumError,
    DownloadError,
    ExtractionError,
    download_url,
    extract_archive,
    fetch_resources,
    file_digest,
    redact_url,
)
from leverplus.core.hf_snapshot import (
    MARKER_NAME,
    ModelMaterializationError,
    materialize_model,
    validate_model_dir,
)

FIXTURES = Path(__file__).parent / "fixtures" / "download"
KNOWN_SHA256 = "feb9c3d40dbe5f641de55f9a12c3b0f2a26a27760532c95d9d5dd1ba5dde8d4e"
KNOWN_MD5 = "d26642aa6b22b1f194b4fb88b9d8d8f0"


@pytest.fixture
def payload(tmp_path):
    """A 300 KB pseudo-random file in a served directory."""
    root = tmp_path / "srv"
    root.mkdir()
    data = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(300_000 // 32))
    (root / "blob.bin").write_bytes(data)
    return root, data


def _gets(srv, name):
    return srv.requests_for("/" + name, "GET")


# --------------------------------------------------------------------------------------
# download_url
# --------------------------------------------------------------------------------------


def test_full_download_matches_known_digests_and_skips_rerun(tmp_path):
    dest = tmp_path / "out" / "known.txt"
    with serve_directory(FIXTURES) as srv:
        got = download_url(srv.url_for("known.txt"), dest, sha256=KNOWN_SHA256, md5=KNOWN_MD5, progress=False)
        assert got == dest
        assert dest.read_bytes() == (FIXTURES / "known.txt").read_bytes()
        assert not dest.with_name("known.txt.part").exists()
        n = srv.request_count
        # existing + verified -> no request at all
        download_url(srv.url_for("known.txt"), dest, sha256=KNOWN_SHA256.upper(), progress=False)
        download_url(srv.url_for("known.txt"), dest, progress=False)
        assert srv.request_count == n


def test_resume_after_dropped_connection(tmp_path, payload):
    root, data = payload
    dest = tmp_path / "blob.bin"
    with serve_directory(root, drop_after=200_000) as srv:
        download_url(
            srv.url_for("blob.bin"), dest, sha256=hashlib.sha256(data).hexdigest(), backoff=0, progress=False
        )
        gets = _gets(srv, "blob.bin")
    assert len(gets) == 2
    assert gets[0].header("Range") is None
    first_range = gets[1].header("Range")
    assert first_range is not None and first_range.startswith("bytes=")
    offset = int(first_range[len("bytes=") : -1])
    assert 0 < offset <= 200_000  # resumed from what the first transfer delivered
    assert file_digest(dest) == hashlib.sha256(data).hexdigest()


def test_resume_from_existing_part_file_sends_exact_range(tmp_path, payload):
    root, data = payload
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(data[:12345])
    with serve_directory(root) as srv:
        download_url(srv.url_for("blob.bin"), dest, md5=hashlib.md5(data).hexdigest(), progress=False)
        (get,) = _gets(srv, "blob.bin")
    assert get.header("Range") == "bytes=12345-"
    assert dest.read_bytes() == data


def test_server_ignoring_range_restarts_cleanly(tmp_path, payload):
    root, data = payload
    dest = tmp_path / "blob.bin"
    # a stale part whose bytes are NOT a prefix of the file: appending would corrupt it
    dest.with_name("blob.bin.part").write_bytes(b"X" * 5000)
    with serve_directory(root, ignore_range=True) as srv:
        download_url(srv.url_for("blob.bin"), dest, sha256=hashlib.sha256(data).hexdigest(), progress=False)
        (get,) = _gets(srv, "blob.bin")
    assert get.header("Range") == "bytes=5000-"
    assert dest.read_bytes() == data


def test_complete_part_file_is_finished_via_416(tmp_path, payload):
    root, data = payload
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(data)
    with serve_directory(root) as srv:
        download_url(srv.url_for("blob.bin"), dest, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert dest.read_bytes() == data


def test_resume_false_ignores_part(tmp_path, payload):
    root, data = payload
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(data[:100])
    with serve_directory(root) as srv:
        download_url(srv.url_for("blob.bin"), dest, resume=False, progress=False)
        (get,) = _gets(srv, "blob.bin")
    assert get.header("Range") is None
    assert dest.read_bytes() == data


def test_checksum_mismatch(tmp_path):
    dest = tmp_path / "known.txt"
    wrong = "0" * 64
    with serve_directory(FIXTURES) as srv:
        with pytest.raises(ChecksumError) as err:
            download_url(srv.url_for("known.txt"), dest, sha256=wrong, progress=False)
    msg = str(err.value)
    assert str(dest) in msg and wrong in msg and KNOWN_SHA256 in msg and "sha256" in msg
    assert err.value.expected == wrong and err.value.actual == KNOWN_SHA256
    # the bad bytes are kept aside, nothing resumable or final is left behind
    assert not dest.exists()
    assert not dest.with_name("known.txt.part").exists()
    assert dest.with_name("known.txt.bad").read_bytes() == (FIXTURES / "known.txt").read_bytes()


def test_existing_file_with_wrong_checksum_is_redownloaded(tmp_path):
    dest = tmp_path / "known.txt"
    dest.write_text("stale")
    with serve_directory(FIXTURES) as srv:
        download_url(srv.url_for("known.txt"), dest, sha256=KNOWN_SHA256, progress=False)
        assert srv.request_count == 1
    assert file_digest(dest) == KNOWN_SHA256


def test_http_errors(tmp_path):
    with serve_directory(FIXTURES) as srv:
        with pytest.raises(DownloadError, match=r"HTTP 404 .*missing\.txt"):
            download_url(srv.url_for("missing.txt") + "?token=secret", tmp_path / "m", backoff=0, progress=False)
        assert srv.request_count == 1  # 404 is not retried
    with serve_directory(FIXTURES, fail_first=2) as srv:
        download_url(srv.url_for("known.txt"), tmp_path / "k", retries=2, backoff=0, progress=False)
        assert srv.request_count == 3
    with serve_directory(FIXTURES, fail_first=5) as srv:
        with pytest.raises(DownloadError, match="after 2 attempt"):
            download_url(srv.url_for("known.txt"), tmp_path / "k2", retries=1, backoff=0, progress=False)
    assert not (tmp_path / "k2").exists()


def test_error_messages_do_not_leak_query_strings(tmp_path):
    assert redact_url("https://user:pw@host.example:8443/a/b.zip?sig=abc#x") == "https://host.example:8443/a/b.zip"
    with serve_directory(FIXTURES) as srv:
        with pytest.raises(DownloadError) as err:
            download_url(srv.url_for("nope") + "?X-Amz-Signature=topsecret", tmp_path / "n", progress=False)
    assert "topsecret" not in str(err.value)


def test_invalid_checksum_argument(tmp_path):
    with pytest.raises(ValueError, match="64 hex"):
        download_url("http://127.0.0.1:9/x", tmp_path / "x", sha256="abc")


# --------------------------------------------------------------------------------------
# extract_archive
# --------------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_zip_with_marker_and_skip(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"top/x.txt": b"x", "top/sub/y.txt": b"y", "z.json": b"{}"})
    dest = tmp_path / "out"
    entries = extract_archive(archive, dest, progress=False)
    assert sorted(p.name for p in entries) == ["top", "z.json"]
    assert (dest / "top" / "sub" / "y.txt").read_bytes() == b"y"
    assert (dest / ".extracted-a.zip.json").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".extract-a.zip.") and p.is_dir()]

    # a re-run with the same archive does nothing (local edits survive)
    (dest / "top" / "x.txt").write_bytes(b"edited")
    extract_archive(archive, dest, progress=False)
    assert (dest / "top" / "x.txt").read_bytes() == b"edited"

    # a changed archive is extracted again and replaces the stale tree
    _zip(archive, {"top/x.txt": b"new!", "z.json": b"[]"})
    extract_archive(archive, dest, progress=False)
    assert (dest / "top" / "x.txt").read_bytes() == b"new!"
    assert not (dest / "top" / "sub").exists()


@pytest.mark.parametrize("evil", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt"])
def test_extract_zip_rejects_path_traversal(tmp_path, evil):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr(zipfile.ZipInfo(evil), b"evil")
    dest = tmp_path / "out" / "deeper"
    with pytest.raises(ExtractionError, match="refusing"):
        extract_archive(archive, dest, progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert not (dest / "ok.txt").exists()
    assert not (dest / ".extracted-bad.zip.json").exists()


def test_extract_tar_gz_and_reject_links(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("d/f.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    extract_archive(archive, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "d" / "f.txt").read_text() == "hello"

    bad = tmp_path / "link.tar"
    with tarfile.open(bad, "w") as tf:
        link = tarfile.TarInfo("escape")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(ExtractionError, match="not a regular file"):
        extract_archive(bad, tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2" / "escape").exists()


def test_extract_rejects_unknown_type_and_corrupt_zip(tmp_path):
    (tmp_path / "x.rar").write_bytes(b"")
    with pytest.raises(ExtractionError, match="unsupported"):
        extract_archive(tmp_path / "x.rar", tmp_path / "o", progress=False)
    (tmp_path / "c.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ExtractionError, match="cannot extract"):
        extract_archive(tmp_path / "c.zip", tmp_path / "o", progress=False)


# --------------------------------------------------------------------------------------
# fetch_resources (+ trust-on-first-use manifest)
# --------------------------------------------------------------------------------------


def test_fetch_resources_tofu_manifest(tmp_path):
    srv_root = tmp_path / "srv"
    srv_root.mkdir()
    _zip(srv_root / "pack.zip", {"inner.txt": b"inner"})
    shutil.copy(FIXTURES / "known.txt", srv_root / "known.txt")
    root = tmp_path / "raw"
    with serve_directory(srv_root) as srv:
        spec = [
            {"url": srv.url_for("pack.zip"), "extract": True},
            {"url": srv.url_for("known.txt"), "sha256": KNOWN_SHA256, "dest": "sub/k.txt"},
        ]
        paths = fetch_resources(spec, root, progress=False)
        assert paths == [root / "pack.zip", root / "sub" / "k.txt"]
        assert (root / "inner.txt").read_bytes() == b"inner"
        manifest = json.loads((root / MANIFEST_NAME).read_text())
        assert manifest["pack.zip"]["sha256"] == file_digest(srv_root / "pack.zip")
        assert manifest["pack.zip"]["size"] == (srv_root / "pack.zip").stat().st_size
        assert manifest["sub/k.txt"]["sha256"] == KNOWN_SHA256

        # rerun: everything present and verified -> no HTTP traffic
        n = srv.request_count
        fetch_resources(spec, root, progress=False)
        assert srv.request_count == n

        # upstream changes and the local copy is gone: the recorded hash catches it
        _zip(srv_root / "pack.zip", {"inner.txt": b"tampered"})
        (root / "pack.zip").unlink()
        with pytest.raises(ChecksumError, match="pack.zip"):
            fetch_resources(spec[:1], root, progress=False)


def test_fetch_resources_validates_items(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        fetch_resources([{"url": "http://x/y", "sha1": "a"}], tmp_path)
    with pytest.raises(ValueError, match="relative path"):
        fetch_resources([{"url": "http://x/y", "dest": "../y"}], tmp_path)


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "tiny"}')
    (path / "model.safetensors").write_bytes(b"\0" * 16)
    return path


def test_local_model_symlink_and_copy(tmp_path):
    src = _model_dir(tmp_path / "src_model")
    dest = tmp_path / "data" / "models" / "m"
    out = materialize_model({"source": "local", "path": str(src)}, dest)
    assert out == dest and dest.is_symlink() and dest.resolve() == src.resolve()
    assert (dest / "config.json").is_file()
    materialize_model({"source": "local", "path": str(src)}, dest)  # idempotent
    assert dest.is_symlink()

    # switching to copy replaces the link by a real directory with a marker;
    # project-level keys (adapter, dtype, ...) are ignored and not recorded
    spec = {"source": "local", "path": str(src), "link": "copy", "adapter": "qwen2_5_vl", "batch_size": 4}
    materialize_model(spec, dest)
    assert not dest.is_symlink() and (dest / "model.safetensors").read_bytes() == b"\0" * 16
    assert json.loads((dest / MARKER_NAME).read_text())["spec"] == {"source": "local", "path": str(src), "link": "copy"}
    assert not (src / MARKER_NAME).exists()
    # same source keys, different project keys -> no re-copy
    (dest / "local_edit.txt").write_text("kept")
    materialize_model({**spec, "batch_size": 8}, dest)
    assert (dest / "local_edit.txt").exists()
    # a different source spec replaces the copied directory
    materialize_model({"source": "local", "path": str(src)}, dest)
    assert dest.is_symlink()


def test_local_model_from_a_project_model_entry(tmp_path):
    """A `models.<name>` entry after the project schema's defaults (revision: main, layout: hf) with source local."""
    src = _model_dir(tmp_path / "src_model")
    entry = {"adapter": "qwen2_5_vl", "source": "local", "path": str(src), "revision": "main", "link": "symlink",
             "layout": "hf", "dtype": "float32", "batch_size": 16, "trust_remote_code": False}
    assert materialize_model(entry, tmp_path / "m").resolve() == src.resolve()


def test_local_checkpoint_layout_needs_weights_not_config(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "lang").mkdir(parents=True)
    (ckpt / "lang" / "model.safetensors").write_bytes(b"\0" * 8)
    dest = materialize_model({"source": "local", "path": str(ckpt), "layout": "checkpoint"}, tmp_path / "m")
    assert dest.is_symlink()
    with pytest.raises(ModelMaterializationError, match="config.json is missing"):
        materialize_model({"source": "local", "path": str(ckpt)}, tmp_path / "m2")
    (tmp_path / "no_weights").mkdir()
    with pytest.raises(ModelMaterializationError, match="no .*weight files"):
        materialize_model({"source": "local", "path": str(tmp_path / "no_weights"), "layout": "checkpoint"},
                          tmp_path / "m3")


def test_adapter_config_is_never_written_into_a_linked_local_model(tmp_path):
    from leverplus.tracks.vqa.stages.download import download_model

    src = _model_dir(tmp_path / "src_model")
    dest = tmp_path / "data" / "models" / "m"
    spec = {"source": "local", "path": str(src), "adapter_config": {"cross_attn_every_n_layers": 2}}
    with pytest.raises(ValueError, match="link: copy"):
        download_model(input=[], output=[str(dest)], params={"spec": spec, "adapter": "flamingo"},
                       wildcards={"model": "m"}, threads=1)
    assert not (src / "leverplus_flamingo.json").exists()
    download_model(input=[], output=[str(dest)], params={"spec": {**spec, "link": "copy"}, "adapter": "flamingo"},
                   wildcards={"model": "m"}, threads=1)
    assert json.loads((dest / "leverplus_flamingo.json").read_text()) == {"cross_attn_every_n_layers": 2}
    assert not (src / "leverplus_flamingo.json").exists()


def test_local_model_errors(tmp_path):
    with pytest.raises(ModelMaterializationError, match="does not exist"):
        materialize_model({"source": "local", "path": str(tmp_path / "nope")}, tmp_path / "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelMaterializationError, match="config.json is missing"):
        materialize_model({"source": "local", "path": str(tmp_path / "empty")}, tmp_path / "d")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ModelMaterializationError, match="not valid JSON"):
        validate_model_dir(bad)
    with pytest.raises(ModelMaterializationError, match="invalid model spec"):
        materialize_model({"source": "local"}, tmp_path / "d")
    # keys of the other source are dropped, not errors: the project schema gives every model entry the defaults
    # revision: main and link: symlink whatever its source
    from leverplus.core.hf_snapshot import _source_spec

    assert _source_spec({"source": "hf", "repo_id": "a/b", "link": "symlink", "path": "/x"}) == {
        "source": "hf", "repo_id": "a/b"}
    with pytest.raises(ModelMaterializationError, match="invalid model spec"):
        materialize_model({"source": "hf", "repo_id": "not a repo id"}, tmp_path / "d")
    # refuses to clobber a directory it did not create
    src = _model_dir(tmp_path / "src")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(ModelMaterializationError, match="refusing to replace"):
        materialize_model({"source": "local", "path": str(src)}, foreign)
    assert (foreign / "keep.txt").read_text() == "precious"


HUB_FILES = {
    "config.json": b'{"model_type": "tiny"}',
    "model.safetensors": b"\1" * 64,
    "tokenizer/vocab.txt": b"a\nb\n",
    "README.md": b"# tiny",
}


def test_hf_snapshot_from_fake_endpoint_with_env_token(tmp_path, monkeypatch, hub_online):  # hub_online: the local fake hub (conftest)
    monkeypatch.setenv("HF_TOKEN", "hf_test_secret")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    dest = tmp_path / "models" / "tiny"
    with serve_fake_hf_hub("org/tiny", HUB_FILES, token="hf_test_secret") as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.base_url)
        spec = {
            "source": "hf",
            "repo_id": "org/tiny",
            "revision": "main",
            "allow_patterns": ["*.json", "*.safetensors", "tokenizer/*"],
        }
        out = materialize_model(spec, dest)
        assert out == dest
        assert (dest / "config.json").read_bytes() == HUB_FILES["config.json"]
        assert (dest / "tokenizer" / "vocab.txt").read_bytes() == b"a\nb\n"
        assert not (dest / "README.md").exists()  # filtered by allow_patterns
        assert not dest.with_name(".tiny.download").exists()  # staging renamed away
        repo_requests = [r for r in srv.requests if r.path.startswith(("/api/models/org/tiny/", "/org/tiny/"))]
        assert len(repo_requests) >= 4
        assert [r for r in repo_requests if r.header("Authorization") != "Bearer hf_test_secret"] == []
        n = srv.request_count
        materialize_model(spec, dest)  # same spec -> no traffic
        assert srv.request_count == n


def test_hf_snapshot_errors_are_clear_and_do_not_leak_token(tmp_path, monkeypatch, hub_online):  # hub_online: the local fake hub (conftest)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_secret")
    with serve_fake_hf_hub("org/tiny", HUB_FILES, token="hf_right") as srv:
        spec = {"source": "hf", "repo_id": "org/tiny", "revision": "main", "endpoint": srv.base_url}
        with pytest.raises(ModelMaterializationError) as err:
            materialize_model(spec, tmp_path / "m")
        msg = str(err.value)
        assert "org/tiny" in msg and "401" in msg and "HF_TOKEN" in msg and srv.base_url in msg
        assert "hf_wrong_secret" not in msg

        monkeypatch.setenv("HF_TOKEN", "hf_right")
        with pytest.raises(ModelMaterializationError, match=r"revision 'v9'.*RevisionNotFound"):
            materialize_model({**spec, "revision": "v9"}, tmp_path / "m")
        with pytest.raises(ModelMaterializationError, match="config.json is missing.*allow_patterns"):
            materialize_model({**spec, "allow_patterns": ["README.md"]}, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_hf_snapshot_without_env_token_sends_no_credentials(tmp_path, monkeypatch, hub_online):  # hub_online: the local fake hub (conftest)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # a token cached on disk must not be picked up implicitly
    import huggingface_hub.constants

    token_file = tmp_path / "token"
    token_file.write_text("hf_cached_on_disk")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(token_file))
    with serve_fake_hf_hub("org/tiny", HUB_FILES) as srv:
        commit = "0123456789abcdef0123456789abcdef01234567"
        materialize_model(
            {"source": "hf", "repo_id": "org/tiny", "revision": commit, "endpoint": srv.base_url}, tmp_path / "m"
        )
        assert srv.requests_for("/org/tiny/resolve/" + commit + "/config.json", "GET")
        assert [r for r in srv.requests if r.header("Authorization") is not None] == []
        # pinned commit: no revision lookup needed
        assert not [r for r in srv.requests if "/revision/" in r.path]
    assert (tmp_path / "m" / "README.md").exists()


def test_hf_model_entry_with_project_defaults_downloads_through_the_stage(tmp_path, monkeypatch, hub_online):  # hub_online: the local fake hub (conftest)
    """What `rule download_model` passes for an hf model once the project schema filled its defaults
    (link: symlink and layout: hf apply to every source)."""
    from leverplus.tracks.vqa.stages.download import download_model

    dest = tmp_path / "data" / "models" / "tiny"
    with serve_fake_hf_hub("org/tiny", HUB_FILES) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.base_url)
        spec = {"source": "hf", "repo_id": "org/tiny", "revision": "main", "link": "symlink", "layout": "hf",
                "adapter_config": {"k": 1}}
        download_model(input=[], output=[str(dest)], params={"spec": spec, "adapter": "qwen2_5_vl"},
                       wildcards={"model": "tiny"}, threads=1)
    assert (dest / "config.json").read_bytes() == HUB_FILES["config.json"]
    assert json.loads((dest / "leverplus_qwen2_5_vl.json").read_text()) == {"k": 1}
