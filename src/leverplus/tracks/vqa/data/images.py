"""Image loading with one clear error type for unreadable files."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageFile

__all__ = ["ImageLoadError", "load_image"]


class ImageLoadError(OSError):
    """An image file is missing, unreadable, corrupt or truncated."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {path}: {reason}")


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path`` and return a fully decoded RGB ``PIL.Image.Image``.

    The pixel data is decoded eagerly (so truncated/corrupt files fail *here*,
    not later inside a model's preprocessing) and the file handle is closed
    before returning.  Palette, grayscale, RGBA, CMYK ... are converted to RGB
    (alpha is dropped).  EXIF orientation is *not* applied: the datasets'
    annotations refer to the stored pixel layout.

    Raises :class:`ImageLoadError` for a missing file, a file that is not an
    image, or a corrupt/truncated one.  Note: if some other code sets the
    global ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True``, Pillow pads
    truncated images instead of failing; this function refuses to run in that
    state rather than silently returning padded pixels.
    """
    p = Path(path)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ImageLoadError(
            p, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is enabled, so truncated files could not be detected"
        )
    if not p.exists():
        raise ImageLoadError(p, "file does not exist")
    if not p.is_file():
        raise ImageLoadError(p, "not a regular file")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(p, f"image too large ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageLoadError(p, "not a recognised image format") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageLoadError(p, f"corrupt or truncated image ({exc})") from exc
