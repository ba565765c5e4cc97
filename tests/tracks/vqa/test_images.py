import io
import random

import pytest
from PIL import Image, ImageFile

from leverplus.tracks.vqa.data.images import ImageLoadError, load_image


def _noisy_jpeg_bytes(size=(64, 48), mode="RGB") -> bytes:
    rng = random.Random(0)
    bands = len(mode)
    im = Image.frombytes(mode, size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * bands)))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_loads_jpeg_as_rgb(tmp_path):
    p = tmp_path / "gray.jpg"
    p.write_bytes(_noisy_jpeg_bytes(mode="L"))
    im = load_image(p)
    assert im.mode == "RGB"
    assert im.size == (64, 48)
    # fully loaded: usable after the file is gone
    p.unlink()
    assert im.getpixel((0, 0)) is not None


def test_converts_rgba_png(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGBA", (3, 2), (10, 20, 30, 0)).save(p)
    im = load_image(str(p))
    assert im.mode == "RGB" and im.getpixel((1, 1)) == (10, 20, 30)


def test_truncated_jpeg_raises(tmp_path):
    data = _noisy_jpeg_bytes()
    p = tmp_path / "trunc.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError) as err:
        load_image(p)
    assert str(err.value).startswith(f"cannot read image {p}: ")
    assert "truncated" in str(err.value)
    assert err.value.path == p


def test_text_file_named_jpg_raises(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n")
    with pytest.raises(ImageLoadError, match=r"cannot read image .*notes\.jpg: not a recognised image format"):
        load_image(p)


def test_missing_file_and_directory_raise(tmp_path):
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(tmp_path)


def test_refuses_when_truncated_loading_is_globally_enabled(tmp_path, monkeypatch):
    data = _noisy_jpeg_bytes()
    p = tmp_path / "trunc.jpg"
    p.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageLoadError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(p)
