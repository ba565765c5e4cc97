"""Audio files -> 16 kHz mono float32, the only input the Whisper feature extractor of Qwen2.5-Omni accepts.

``load_audio`` reads with soundfile (WAV/FLAC/OGG/…; libsndfile decides from the bytes, not the name), averages
the channels, and resamples with a polyphase filter (``scipy.signal.resample_poly``, up/down reduced by their gcd)
when the file's rate is not 16 kHz. Every failure raises :class:`AudioInputError` with one line naming the file
and the problem: missing, a directory, empty (0 bytes or 0 frames), not audio / corrupt, a WAV shorter than its
header says (libsndfile would read the rest silently), non-finite samples, channels that cancel when averaged
(antiphase stereo would become silence).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

TARGET_SR = 16000


class AudioInputError(ValueError):
    """An audio file cannot be used as given (the message names the file and the problem)."""


def resample(wav: np.ndarray, sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    """Polyphase resampling (Kaiser-windowed FIR of scipy.signal.resample_poly) from ``sr`` to ``target_sr``."""
    if sr == target_sr:
        return wav.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(int(sr), int(target_sr))
    return resample_poly(wav.astype(np.float64), target_sr // g, int(sr) // g).astype(np.float32)


def _check_wav_complete(p: Path) -> None:
    """A RIFF/WAVE file whose ``data`` chunk declares more bytes than the file holds is truncated (libsndfile reads
    what is there and reports the shorter length, silently). Streaming placeholders (size 0 or 0xFFFFFFFF) and
    non-RIFF files are left to libsndfile."""
    import struct

    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos, block_align = 12, None
        while pos + 8 <= size:
            fh.seek(pos)
            hdr = fh.read(8)
            if len(hdr) < 8:
                return
            cid, n = hdr[:4], struct.unpack("<I", hdr[4:])[0]
            if cid == b"fmt " and n >= 14:
                block_align = struct.unpack("<H", fh.read(14)[12:14])[0]
            if cid == b"data":
                if n in (0, 0xFFFFFFFF):
                    return
                have = size - pos - 8
                if n > have:
                    unit = f"{n // block_align} frames declared, {have // block_align} present" if block_align \
                        else f"{n} bytes declared, {have} present"
                    raise AudioInputError(f"{p}: truncated WAV: the header's data chunk says {unit}")
                return
            pos += 8 + n + (n & 1)


def load_audio(path: str | os.PathLike, *, target_sr: int = TARGET_SR,
               min_mix_ratio: float = 0.1) -> np.ndarray:
    """The file at ``path`` as a float32 mono array at ``target_sr`` (values in [-1, 1] for PCM input)."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioInputError(f"{p}: audio file not found")
    if p.is_dir():
        raise AudioInputError(f"{p}: is a directory, expected an audio file")
    if p.stat().st_size == 0:
        raise AudioInputError(f"{p}: audio file is empty (0 bytes)")
    _check_wav_complete(p)
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioInputError(f"{p}: not a readable audio file ({str(exc).strip() or type(exc).__name__})") from None
    if data.shape[0] == 0:
        raise AudioInputError(f"{p}: audio file has no samples")
    if sr <= 0:
        raise AudioInputError(f"{p}: invalid sample rate {sr}")
    if not np.all(np.isfinite(data)):
        raise AudioInputError(f"{p}: audio has non-finite samples (NaN/inf)")
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if data.shape[1] > 1:
        ch_rms = float(np.sqrt(np.mean(np.square(data, dtype=np.float64))))
        mix_rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
        if ch_rms > 1e-4 and mix_rms < min_mix_ratio * ch_rms:
            raise AudioInputError(
                f"{p}: the {data.shape[1]} channels cancel when averaged to mono (mix RMS {mix_rms:.2g} vs channel "
                f"RMS {ch_rms:.2g}: antiphase?); pick one channel or fix the file")
    return np.ascontiguousarray(resample(wav, int(sr), target_sr), dtype=np.float32)


def audio_duration_s(path: str | os.PathLike) -> float:
    """Duration from the header (no decoding)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioInputError(f"{path}: not a readable audio file ({str(exc).strip()})") from None
    return info.frames / info.samplerate
