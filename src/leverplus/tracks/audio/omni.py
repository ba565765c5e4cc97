"""Audio captioning with a Qwen2.5-Omni thinker (text out), timed per token.

`OmniCaptioner.load(model_dir)` loads `Qwen2_5OmniThinkerForConditionalGeneration` (it also reads the full Omni
checkpoint: the `thinker.` prefix is mapped) with the torchvision-free processor of `audio_processor`, and
replaces the model's `generation_config` by one that carries only the special token ids, so nothing of the
checkpoint's decoding defaults can reach `generate` (the settings come from `AudioGenerationSettings` alone).

`caption(audio, system_prompt=…, prompt=…, settings=…)` times one request in two parts:

* ``feature_s`` — chat template + Whisper feature extraction + tokenisation (reported separately);
* then ``request_start`` (right before `generate`), ``token_times`` (perf_counter of every generated token, from
  `TokenTimestampStreamer`'s per-token `put` calls), ``first_token_time`` and ``end_time``; ``ttft_s`` is the
  model's TTFT (prefill + first token) after the features.

``token_ids``/``n_tokens``/``token_times`` cover the generated tokens *without* the final end-of-turn token (the
text does not contain it), so ``len(token_times) == n_tokens`` always; ``eos_generated``/``eos_time`` say whether
and when it came. The latency definition of every arm (`leverplus.metrics.latency`) counts it, as vLLM's
``usage.completion_tokens`` does: ``output_tokens`` = ``n_tokens + eos_generated`` decoding steps, and
``first_output_time`` is the first step's time (the end-of-turn's, when it is the only step).

`draft_logprob(audio, …, draft=…)` scores a draft answer under this model in one prefill: the prompt ids (from the
processor, audio pads expanded) followed by the draft's own token ids and the end-of-turn token; the draft's
positions are those appended ids, never found by re-building the prompt string.

Untimed quality passes: `caption_batch` (left-padded batched `generate`, the same fresh GenerationConfig) and
`draft_logprob_batch` (one batched prefill). With greedy decoding they return the batch-1 captions / log-probs up to
float noise (the audio workflow records the agreement on its timed clips).

Audio features. The stock Qwen2.5-Omni processor pads every clip's Whisper features to the feature extractor's
``n_samples`` (the checkpoint's preprocessor_config.json: 300 s = 30000 frames for Qwen2.5-Omni; 30 s for the
demo models), but the thinker reads only the frames under ``feature_attention_mask`` (`get_audio_features` selects
them before the audio encoder). `audio_max_length` pads instead to the longest clip of the call plus ``n_fft`` zero
samples (hop-aligned, never beyond ``n_samples``; a longer clip is refused, never cut silently): every frame under
the mask then sees the same samples (the clip, then zeros) and the log-mel floor (max − 8) comes from the same
maximum, so the valid frames are bit-identical to the fully padded ones (`tests/tracks/audio/test_omni.py` checks it) while the
STFT costs far less.
"""
from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leverplus.tracks.audio.generation import AudioGenerationSettings

SAMPLE_RATE = 16000
END_OF_TURN = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def set_threads(n: int) -> dict:
    """Run torch (intra-op and, where still possible, inter-op), OpenMP, MKL and OpenBLAS with `n` threads.

    PyTorch sizes its pool from the host's cores, not the cgroup quota, so a CPU-throttled job must set this
    explicitly. Returns {"threads_requested", "threads_effective" (torch.get_num_threads()), "cpu_model", …}."""
    import torch

    from leverplus.core.runtime import THREAD_ENV_VARS

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    interop = None
    try:
        torch.set_num_interop_threads(n)
        interop = n
    except RuntimeError:  # only settable before the first parallel work in this process
        interop = torch.get_num_interop_threads()
    threadpoolctl = False
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
        threadpoolctl = True
    except ImportError:
        pass
    return {
        "threads_requested": n,
        "threads_effective": torch.get_num_threads(),
        "interop_threads": interop,
        "threadpoolctl": threadpoolctl,
        "cpu_model": cpu_model(),
        "cpu_count_host": os.cpu_count(),
    }


def resolve_device(device: str | None) -> str:
    """Where an Omni thinker runs: :func:`leverplus.core.runtime.resolve_device` with ``cpu`` as the default — the edge arm
    must never land on a GPU because one is visible; ``auto`` picks CUDA when available."""
    from leverplus.core.runtime import resolve_device as resolve

    return resolve(device, default="cpu")


def device_record(requested: str | None, resolved: str, dtype: str) -> dict:
    """What run.json records about where a job's model ran."""
    import torch

    out = {"requested": requested, "device": resolved, "dtype": dtype, "cuda_visible": torch.cuda.is_available()}
    if resolved.startswith("cuda"):
        out["gpu_name"] = torch.cuda.get_device_name(torch.device(resolved))
    return out


@dataclass
class CaptionResult:
    text: str
    token_ids: list[int]
    n_tokens: int
    feature_s: float
    request_start: float
    first_token_time: float | None
    end_time: float
    token_times: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    finish_reason: str = "stop"  # "stop" (end-of-turn emitted) or "length" (max_new_tokens reached)
    eos_generated: bool = False  # the end-of-turn token was generated (one decoding step, not in the text)
    eos_time: float | None = None

    @property
    def output_tokens(self) -> int:
        """Decoding steps, the end-of-turn token included when generated (vLLM's completion_tokens)."""
        return self.n_tokens + int(self.eos_generated)

    @property
    def first_output_time(self) -> float | None:
        """Time of the first decoding step (a text token, or the end-of-turn token when it is the only one)."""
        return self.token_times[0] if self.token_times else self.eos_time

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.request_start

    @property
    def total_s(self) -> float:
        return self.end_time - self.request_start

    def to_dict(self) -> dict:
        return {
            "text": self.text, "token_ids": self.token_ids, "n_tokens": self.n_tokens, "feature_s": self.feature_s,
            "ttft_s": self.ttft_s, "total_s": self.total_s, "prompt_tokens": self.prompt_tokens,
            "finish_reason": self.finish_reason,
            "token_offsets_s": [t - self.request_start for t in self.token_times],
        }


def _check_audio(audio) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"audio must be a 1-D mono array at {SAMPLE_RATE} Hz, got shape {a.shape}")
    if a.size == 0:
        raise ValueError("audio is empty")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"audio must be float samples in [-1, 1], got dtype {a.dtype} (integer PCM is not scaled "
                         "here: read files with leverplus.tracks.audio.audio_io.load_audio, or divide by 32768 for int16)")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError("audio contains NaN or infinite samples")
    return a


class OmniCaptioner:
    def __init__(self, model, processor, *, model_dir: str, device: str, dtype: str):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.model_dir = str(model_dir)
        self.device = device
        self.dtype = dtype
        tok = self.tokenizer
        self.end_of_turn_id = tok.convert_tokens_to_ids(END_OF_TURN)
        eot_text = tok.convert_tokens_to_ids(END_OF_TEXT)
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else eot_text
        self.eos_token_ids = [i for i in dict.fromkeys([self.end_of_turn_id, eot_text]) if i is not None]
        self._lock = threading.Lock()  # one request at a time (the local server is threaded)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model_dir, *, dtype: str = "float32", device: str | None = "cpu") -> OmniCaptioner:
        """``device``: see `resolve_device` (default cpu; ``auto`` picks CUDA when one is visible)."""
        import torch
        from transformers import GenerationConfig, Qwen2_5OmniThinkerForConditionalGeneration

        from leverplus.tracks.audio.processor import build_processor

        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"Omni model directory not found: {model_dir}")
        device = resolve_device(device)
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
        if torch_dtype is None:
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
        processor = build_processor(str(model_dir))
        model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            str(model_dir), dtype=torch_dtype, trust_remote_code=False
        ).to(device)
        model.eval()
        self = cls(model, processor, model_dir=str(model_dir), device=device, dtype=dtype)
        # the checkpoint's generation_config.json is dropped: only token ids remain
        model.generation_config = GenerationConfig(
            eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id
        )
        return self

    # ------------------------------------------------------------------ inputs
    def messages(self, *, system_prompt: str | None, prompt: str, answer: str | None = None) -> list[dict]:
        msgs = []
        if system_prompt is not None:
            msgs.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
        msgs.append({"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": prompt}]})
        if answer is not None:
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return msgs

    def prompt_text(self, *, system_prompt: str | None, prompt: str) -> str:
        return self.processor.apply_chat_template(
            self.messages(system_prompt=system_prompt, prompt=prompt), add_generation_prompt=True, tokenize=False
        )

    def processor_info(self) -> dict:
        """What run.json records about the processor: the feature extractor's limits and the template's source."""
        fe = self.processor.feature_extractor
        return {"feature_size": int(fe.feature_size), "chunk_length": int(fe.chunk_length),
                "n_samples": int(fe.n_samples), "max_clip_s": int(fe.n_samples) / SAMPLE_RATE,
                "chat_template": getattr(self.processor, "template_source", None)}

    def audio_max_length(self, lengths) -> int:
        """Samples the Whisper features are padded to for clips of these lengths (see the module doc). A clip
        longer than the feature extractor's ``n_samples`` is refused: the stock processor would cut it silently."""
        fe = self.processor.feature_extractor
        lengths = [int(n) for n in lengths]
        if max(lengths) > int(fe.n_samples):
            raise ValueError(f"audio clip of {max(lengths) / SAMPLE_RATE:.2f} s is longer than the checkpoint's "
                             f"feature extractor accepts ({int(fe.n_samples) / SAMPLE_RATE:g} s, n_samples "
                             f"{int(fe.n_samples)} in {self.model_dir}); it would be cut. Split or trim it first.")
        need = max(lengths) + int(fe.n_fft)
        hop = int(fe.hop_length)
        return int(min(int(fe.n_samples), hop * -(-need // hop)))

    def encode(self, audio, *, system_prompt: str | None, prompt: str) -> dict:
        """Model inputs (tensors on the model's device) for one clip and prompt."""
        return self.encode_batch([audio], system_prompt=system_prompt, prompt=prompt)

    def encode_batch(self, audios, *, system_prompt: str | None, prompt: str) -> dict:
        """Model inputs for several clips with one prompt: token ids left-padded, features padded to the longest."""
        clips = [_check_audio(a) for a in audios]
        if not clips:
            raise ValueError("no audio clips")
        text = self.prompt_text(system_prompt=system_prompt, prompt=prompt)
        inputs = self.processor(text=[text] * len(clips), audio=clips, return_tensors="pt",
                                sampling_rate=SAMPLE_RATE, padding=True, padding_side="left",
                                audio_kwargs={"max_length": self.audio_max_length(len(a) for a in clips)})
        out = {}
        for k, v in inputs.items():
            if k == "input_features":
                v = v.to(self.model.dtype)
            out[k] = v.to(self.device)
        return out

    # ------------------------------------------------------------------ generation
    def _generate(self, inputs: dict, settings: AudioGenerationSettings, streamer) -> None:
        import torch

        if settings.num_beams != 1:
            raise ValueError("OmniCaptioner times every token with a streamer, which needs num_beams = 1")
        kwargs = settings.generate_kwargs(eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id)
        if settings.do_sample:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            self.model.generate(**inputs, **kwargs, streamer=streamer)

    def _result(self, ids: list[int], times: list[float], *, feature_s, request_start, end_time, prompt_tokens,
                max_new_tokens) -> CaptionResult:
        finish, eos, eos_time = "length", False, None
        if ids and ids[-1] in self.eos_token_ids:
            eos, eos_time = True, times[-1]
            ids, times, finish = ids[:-1], times[:-1], "stop"
        elif len(ids) < max_new_tokens:
            finish = "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return CaptionResult(
            text=text, token_ids=list(ids), n_tokens=len(ids), feature_s=feature_s, request_start=request_start,
            first_token_time=times[0] if times else None, end_time=end_time, token_times=list(times),
            prompt_tokens=prompt_tokens, finish_reason=finish, eos_generated=eos, eos_time=eos_time,
        )

    def caption(self, audio, *, system_prompt: str | None, prompt: str,
                settings: AudioGenerationSettings) -> CaptionResult:
        from leverplus.tracks.audio.streamer import TokenTimestampStreamer

        with self._lock:
            t0 = time.perf_counter()
            inputs = self.encode(audio, system_prompt=system_prompt, prompt=prompt)
            feature_s = time.perf_counter() - t0
            streamer = TokenTimestampStreamer()
            request_start = time.perf_counter()
            self._generate(inputs, settings, streamer)
            end_time = time.perf_counter()
        return self._result(
            streamer.token_ids, streamer.token_times, feature_s=feature_s, request_start=request_start,
            end_time=end_time, prompt_tokens=int(inputs["input_ids"].shape[1]),
            max_new_tokens=settings.max_new_tokens,
        )

    def caption_batch(self, audios, *, system_prompt: str | None, prompt: str,
                      settings: AudioGenerationSettings, batch_size: int = 32) -> list[dict]:
        """Untimed captions of many clips, `batch_size` per `generate` call (left-padded), the same settings.
        Returns per clip {"text", "n_tokens", "eos_generated", "output_tokens", "finish_reason", "prompt_tokens"}
        with `caption`'s semantics (``n_tokens`` without the end-of-turn token, ``output_tokens`` with it). With sampling, torch is seeded with `settings.seed` before each batch."""
        import torch

        if settings.num_beams != 1:
            raise ValueError("OmniCaptioner decodes with num_beams = 1")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        audios = list(audios)
        kwargs = settings.generate_kwargs(eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id)
        out = []
        with self._lock:
            for i in range(0, len(audios), batch_size):
                inputs = self.encode_batch(audios[i:i + batch_size], system_prompt=system_prompt, prompt=prompt)
                if settings.do_sample:
                    torch.manual_seed(settings.seed)
                with torch.inference_mode():
                    seqs = self.model.generate(**inputs, **kwargs)
                n_in = int(inputs["input_ids"].shape[1])
                prompt_lens = inputs["attention_mask"].sum(dim=1).tolist()
                for row, n_prompt in zip(seqs[:, n_in:].tolist(), prompt_lens):
                    ids, finish, eos = [], "length", False
                    for t in row:
                        if t in self.eos_token_ids:
                            finish, eos = "stop", True
                            break
                        ids.append(int(t))
                    if finish == "length" and len(ids) < settings.max_new_tokens:
                        finish = "stop"
                    out.append({"text": self.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                                "n_tokens": len(ids), "eos_generated": eos,
                                "output_tokens": len(ids) + int(eos), "finish_reason": finish,
                                "prompt_tokens": int(n_prompt)})
        return out

    def warm_up(self) -> None:
        """One short generation (1 s of quiet noise, 2 tokens) so the timed requests skip first-call costs."""
        rng = np.random.default_rng(0)
        audio = (rng.standard_normal(SAMPLE_RATE) * 0.01).astype(np.float32)
        self.caption(audio, system_prompt=None, prompt="warm-up",
                     settings=AudioGenerationSettings(min_new_tokens=0, max_new_tokens=2, no_repeat_ngram_size=0))

    # ------------------------------------------------------------------ scoring
    def draft_logprob(self, audio, *, system_prompt: str | None, prompt: str, draft: str) -> dict:
        """Mean token log-prob of `draft` (+ the end-of-turn token) as this model's answer; one prefill."""
        import torch

        with self._lock:
            t0 = time.perf_counter()
            inputs = self.encode(audio, system_prompt=system_prompt, prompt=prompt)
            draft_ids = self.tokenizer(draft, add_special_tokens=False)["input_ids"] + [self.end_of_turn_id]
            n_prompt = int(inputs["input_ids"].shape[1])
            extra = torch.tensor([draft_ids], dtype=inputs["input_ids"].dtype, device=self.device)
            inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
            inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
            with torch.inference_mode():
                logits = self.model(**inputs, use_cache=False).logits[0].float()
            # logits at position p predict the token at p + 1
            pred = logits[n_prompt - 1: n_prompt - 1 + len(draft_ids)]
            logp = torch.log_softmax(pred, dim=-1).gather(1, extra[0].unsqueeze(1)).squeeze(1)
            mean = float(logp.mean())
            seconds = time.perf_counter() - t0
        return {"mean_logprob": mean, "n_tokens": len(draft_ids), "seconds": seconds}

    def draft_logprob_batch(self, audios, drafts, *, system_prompt: str | None, prompt: str,
                            batch_size: int = 32) -> list[dict]:
        """`draft_logprob` for many (clip, draft) pairs, `batch_size` per prefill: each row is the clip's prompt
        ids (the processor's, padding removed) + the draft's ids + end-of-turn, right-padded; untimed."""
        import torch

        audios, drafts = list(audios), list(drafts)
        if len(audios) != len(drafts):
            raise ValueError(f"{len(audios)} clips but {len(drafts)} drafts")
        out = []
        with self._lock:
            for i in range(0, len(audios), batch_size):
                inputs = self.encode_batch(audios[i:i + batch_size], system_prompt=system_prompt, prompt=prompt)
                ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
                rows, spans = [], []
                for r, d in enumerate(drafts[i:i + batch_size]):
                    p = ids[r][mask[r]].tolist()  # the prompt without its left padding
                    dr = self.tokenizer(d, add_special_tokens=False)["input_ids"] + [self.end_of_turn_id]
                    spans.append((len(p), dr))
                    rows.append(p + dr)
                width = max(len(x) for x in rows)
                new_ids = torch.full((len(rows), width), self.pad_token_id, dtype=ids.dtype, device=self.device)
                new_mask = torch.zeros((len(rows), width), dtype=inputs["attention_mask"].dtype, device=self.device)
                for r, x in enumerate(rows):
                    new_ids[r, :len(x)] = torch.tensor(x, dtype=ids.dtype)
                    new_mask[r, :len(x)] = 1
                inputs["input_ids"], inputs["attention_mask"] = new_ids, new_mask
                with torch.inference_mode():
                    logits = self.model(**inputs, use_cache=False).logits.float()
                for r, (n_prompt, dr) in enumerate(spans):
                    pred = logits[r, n_prompt - 1: n_prompt - 1 + len(dr)]
                    tgt = torch.tensor(dr, device=pred.device).unsqueeze(1)
                    logp = torch.log_softmax(pred, dim=-1).gather(1, tgt).squeeze(1)
                    out.append({"mean_logprob": float(logp.mean()), "n_tokens": len(dr)})
        return out
