"""Atomic file-writing helpers shared by every stage.

Project rule: an output file is either absent or complete.  Every writer here
writes to a temporary file *in the destination directory* (so the final
``os.replace`` is a same-filesystem atomic rename), flushes and fsyncs it, and
only then renames it over the destination.  If anything raises while the file
is being written, the temporary file is removed and the destination is left
untouched (an older version, if any, survives).

JSON conventions
----------------
* :func:`write_json` writes human-readable JSON: UTF-8, sorted keys, 2-space
  indent, trailing newline, and ``NaN``/``Infinity`` are rejected (they are
  not valid JSON and silently break other readers).
* :func:`canonical_json` returns the compact, key-sorted form used for hashing
  configs / specs: ``separators=(",", ":")`` and ``ensure_ascii=False``.

Both accept, besides plain JSON types, ``pathlib.Path`` (written as ``str``)
and numpy scalars / arrays (written via ``.item()`` / ``.tolist()``); anything
else raises ``TypeError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = [
    "atomic_write",
    "canonical_json",
    "read_json",
    "write_json",
    "write_parquet",
]

_TEXT_MODES = {"w", "wt"}
_BINARY_MODES = {"wb"}


def _current_umask() -> int:
    # os.umask can only be read by setting it; do it once at import time.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so the rename itself is durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on clean exit rename it onto ``path``.

    ``mode`` is ``"w"``/``"wt"`` (text, UTF-8 by default) or ``"wb"``.  Parent
    directories are created.  The final file gets the usual ``0o666 & ~umask``
    permissions (``mkstemp`` would otherwise leave it ``0o600``).  On any
    exception inside the ``with`` block the temporary file is deleted and the
    exception propagates; ``path`` is not touched.
    """
    if mode not in _TEXT_MODES | _BINARY_MODES:
        raise ValueError(f"atomic_write supports modes 'w', 'wt' and 'wb', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        if mode in _BINARY_MODES:
            fh = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    # numpy scalars and arrays, without importing numpy here.
    mod = type(obj).__module__
    if mod == "numpy" or mod.startswith("numpy."):
        if hasattr(obj, "tolist"):
            return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON (sorted keys, indent 2, trailing newline)."""
    text = json.dumps(
        obj, sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False, default=_json_default
    )
    with atomic_write(path, "w") as fh:
        fh.write(text)
        fh.write("\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a UTF-8 JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def canonical_json(obj: Any) -> str:
    """Compact, deterministic JSON text for hashing (sorted keys, no whitespace, no NaN)."""
    return json.dumps(
        obj,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


def write_parquet(path: str | os.PathLike[str], df: Any, *, schema: Any = None) -> None:
    """Atomically write a pandas DataFrame (index dropped) or a ``pyarrow.Table`` to Parquet.

    ``schema`` (a ``pyarrow.Schema``) is optional and only used for DataFrames,
    to pin column types (e.g. ``list<string>``) independently of pandas' inference.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(df, pa.Table):
        table = df
    else:
        table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    with atomic_write(path, "wb") as fh:
        pq.write_table(table, fh)
