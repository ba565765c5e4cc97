"""Qwen2.5-VL adapter (transformers `Qwen2_5_VLForConditionalGeneration`).

Prompt: `prompting.ChatLayout` with the adapter's instruction (config `prompt.instruction`, passed at construction;
default the Qwen-VL short-answer instruction): it follows the question in every user turn. Scoring (the InfoScore
beam search), the reference path and generation all build their turns through that one layout.

Scored sequence: the chat conversation of `layout.conversation(icds, query, with_answer=True)`. The answer
tokens are located in the token ids themselves: the scored span starts right after the last occurrence of the
assistant generation header (the token ids the chat template appends for `add_generation_prompt=True`, derived
once from the template) and ends before the next `<|im_end|>`; the end-of-turn token is not scored.

Fast path (`score`, `score_step`): every image goes through the image processor and the vision tower once per adapter
lifetime, features cached by path. A row is assembled from per-turn pieces — the template's head, one block per
demonstration, the query's block — each rendered by the chat template, tokenised (image pads expanded to the image's
grid, as the processor does) and given its M-RoPE ids by the model's own `get_rope_index` once (`ChatSegments`
checks that the template decomposes; otherwise rows are rendered whole). Tests check the ids equal the processor's
and the positions equal `get_rope_index` on the whole row. Rows are grouped by the prefix they share (a beam's
demonstrations with construct_order `right`); every group's prefix is run once per call, and its KV cache serves the
group's rows in every batch. Each row is run only up to the input of its last scored logit, right-padded, so padding
never changes a real token's attention.

Generation (`generate`): transformers' `generate` with a fresh `GenerationConfig` built from the explicit
`GenerationSettings` (config `infer.generation`); the checkpoint's own `generation_config` is replaced at load by
one that holds only the special token ids, so no sampling setting or repetition penalty of the checkpoint is ever
merged in (see `generation.py`). Answers are the new tokens up to `<|im_end|>`, decoded without special tokens and
stripped.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from leverplus.tracks.vqa.data.images import load_image
from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.tracks.vqa.models import prompting
from leverplus.tracks.vqa.models.base import ICLModel, extend, register_adapter
from leverplus.models.generation import GenerationSettings, hf_generation_config, neutral_generation_config, resolve
from leverplus.tracks.vqa.models.chat_segments import ChatSegments, splits_before
from leverplus.tracks.vqa.models.feature_cache import TensorLRU


@dataclass(frozen=True)
class _Piece:
    """Tokenised conversation text: ids, M-RoPE ids (3, n) starting at 0, the position the next piece starts at,
    and the images of its image pads in order."""

    ids: np.ndarray  # int64 (n,)
    pos: np.ndarray  # int64 (3, n)
    advance: int
    images: tuple[str, ...]


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are scored in float32; float32 and float64 ones as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _find_last(haystack: np.ndarray, needle: list[int]) -> int:
    n = len(needle)
    for start in np.flatnonzero(haystack[: len(haystack) - n + 1] == needle[0])[::-1]:
        if haystack[start : start + n].tolist() == needle:
            return int(start)
    return -1


@register_adapter("qwen2_5_vl")
class Qwen25VLICL(ICLModel):
    name = "qwen2_5_vl"

    def __init__(
        self,
        path: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 16,
        trust_remote_code: bool = False,
        attn_implementation: str = "sdpa",
        image_cache_mb: float | None = None,
        prompt: prompting.PromptSettings | dict | None = None,
    ):
        from transformers import Qwen2_5_VLForConditionalGeneration

        from leverplus.tracks.vqa.models.qwen_processor import load_processor

        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.batch_size = batch_size
        self.processor = load_processor(path)
        self.tokenizer = self.processor.tokenizer
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, dtype=self.dtype, trust_remote_code=trust_remote_code, attn_implementation=attn_implementation
        ).to(self.device)
        self.model.eval()
        cfg = self.model.config
        self.image_token_id = cfg.image_token_id
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.end_id
        self.merge = self.processor.image_processor.merge_size
        if not isinstance(prompt, prompting.PromptSettings):
            prompt = prompting.PromptSettings.from_config(prompt)
        self.instruction = prompt.instruction
        self.layout = prompting.ChatLayout(prompt.instruction)
        # Nothing of the checkpoint's generation_config (sampling, repetition_penalty, ...) may reach `generate`.
        self.model.generation_config = neutral_generation_config(
            eos_token_id=self.end_id, pad_token_id=self.pad_id, bos_token_id=self.model.generation_config.bos_token_id
        )
        self._header = self._assistant_header()
        self._grids: dict[str, torch.Tensor] = {}  # image_grid_thw (1, 3) per image, kept
        self._pending: dict[str, torch.Tensor] = {}  # pixel values until the image's features are computed
        self._n_tokens: dict[str, int] = {}
        self._features = TensorLRU.for_images(image_cache_mb)
        self._pieces: dict[tuple, _Piece] = {}
        self._segments = ChatSegments(self._render, self.layout)
        self._blockwise = self._segments.exact and all(
            splits_before(self.tokenizer, self._segments.block(ex, with_answer=w))
            for ex, w in self._segments.probe_blocks()
        )

    # ---- tokenisation -------------------------------------------------------------------------------------
    def _render(self, msgs: list[dict], add_generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _assistant_header(self) -> list[int]:
        """Token ids the chat template adds for the assistant's turn, read off the template itself."""
        probe = [self.layout.user_turn(VQAExample("probe", "", "probe", ""))]
        plain, gen = self._render(probe, False), self._render(probe, True)
        if not gen.startswith(plain):
            raise ValueError("chat template: the generation prompt is not an extension of the conversation")
        ids_plain = self.tokenizer(plain, add_special_tokens=False)["input_ids"]
        ids_gen = self.tokenizer(gen, add_special_tokens=False)["input_ids"]
        if ids_gen[: len(ids_plain)] != ids_plain:
            raise ValueError("chat template: generation header does not tokenise as a suffix")
        return ids_gen[len(ids_plain) :]

    def _grid_of(self, path: str) -> torch.Tensor:
        if path not in self._grids:
            self._load_pixels([path])
        return self._grids[path]

    def _load_pixels(self, paths: Sequence[str]) -> None:
        """Run the image processor once over every image whose grid is unknown or whose features must be
        (re)computed (it processes each image on its own and concatenates the patches; they are split back by each
        image's grid). Pixel values are kept only until the image's features exist."""
        todo = [
            p for p in dict.fromkeys(paths)
            if p not in self._grids or (p not in self._features and p not in self._pending)
        ]
        if not todo:
            return
        enc = self.processor.image_processor(images=[load_image(p) for p in todo], return_tensors="pt")
        grids = enc["image_grid_thw"]
        for path, pix, thw in zip(todo, enc["pixel_values"].split(grids.prod(-1).tolist()), grids):
            self._grids[path] = thw[None]
            if path not in self._features:
                self._pending[path] = pix

    def _n_image_tokens(self, path: str) -> int:
        if path not in self._n_tokens:
            self._n_tokens[path] = int(self._grid_of(path).prod()) // (self.merge**2)
        return self._n_tokens[path]

    def _expand(self, text: str, images: Sequence[str]) -> str:
        """`text` with its i-th image pad repeated to image i's token count, as the processor does."""
        pad = self.processor.image_token
        pieces = text.split(pad)
        if len(pieces) != len(images) + 1:
            raise ValueError(f"expected {len(images)} image placeholders, found {len(pieces) - 1}")
        out = pieces[0]
        for path, piece in zip(images, pieces[1:]):
            out += pad * self._n_image_tokens(path) + piece
        return out

    def _positions(self, ids: np.ndarray, images: Sequence[str]) -> np.ndarray:
        """The model's own 3-D M-RoPE ids (3, n) of one token sequence that starts at position 0."""
        t = torch.from_numpy(ids)[None]
        thw = torch.cat([self._grid_of(p) for p in images]) if images else None
        pos, _ = self.model.model.get_rope_index(t, (t == self.image_token_id).int(), image_grid_thw=thw)
        return pos[:, 0].numpy()

    def _ids(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    def _piece(self, key: tuple, render: Callable[[], str], images: Sequence[str]) -> _Piece:
        if key not in self._pieces:
            text = render()
            if not splits_before(self.tokenizer, text) and key != ("head",):
                raise RuntimeError("a cached chat turn does not start at a tokenizer split point")
            ids = self._ids(self._expand(text, images))
            pos = self._positions(ids, images)
            self._pieces[key] = _Piece(ids, pos, int(pos.max()) + 1 if len(ids) else 0, tuple(images))
        return self._pieces[key]

    def _row(self, icds: Sequence[VQAExample], query: VQAExample, *, with_answer: bool) -> _Piece:
        """Token ids, M-RoPE ids and images of one conversation. With a template that decomposes into turns
        (`ChatSegments.exact`) it is assembled from per-example pieces, tokenised once each; M-RoPE ids are
        additive over pieces (each starts where the previous one's positions end), and a test checks both the ids
        and the positions against the processor and `get_rope_index` on the whole row."""
        images = prompting.images_in_order(icds, query)
        if not self._blockwise:
            text = self._render(self.layout.conversation(icds, query, with_answer=with_answer), not with_answer)
            ids = self._ids(self._expand(text, images))
            return _Piece(ids, self._positions(ids, images), 0, tuple(images))
        seg = self._segments
        pieces = [self._piece(("head",), lambda: seg.head, [])]
        for ex, answered in [*((d, True) for d in icds), (query, with_answer)]:
            key = (ex.image, ex.question, ex.answer if answered else None)
            pieces.append(self._piece(key, lambda ex=ex, answered=answered: seg.block(ex, with_answer=answered), [ex.image]))
        starts = np.cumsum([0] + [piece.advance for piece in pieces])
        ids = np.concatenate([piece.ids for piece in pieces])
        pos = np.concatenate([piece.pos + start for piece, start in zip(pieces, starts)], axis=1)
        return _Piece(ids, pos, int(starts[-1]), tuple(images))

    def _tokenise(self, icds: Sequence[VQAExample], query: VQAExample, *, with_answer: bool) -> list[int]:
        return self._row(icds, query, with_answer=with_answer).ids.tolist()

    def _answer_span(self, ids: Sequence[int]) -> tuple[int, int]:
        ids = np.asarray(ids)
        start = _find_last(ids, self._header)
        if start < 0:
            raise ValueError("no assistant turn in the scored sequence")
        a0 = start + len(self._header)
        ends = np.flatnonzero(ids[a0:] == self.end_id)
        if not len(ends):
            raise ValueError("the scored answer has no end-of-turn token")
        a1 = a0 + int(ends[0])
        if a1 == a0:
            raise ValueError("empty answer")
        return a0, a1

    def answer_mask(self, icds, query):
        ids = self._tokenise(icds, query, with_answer=True)
        a0, a1 = self._answer_span(ids)
        return ids, [a0 <= i < a1 for i in range(len(ids))]

    # ---- reference path: the original algorithm ---------------------------------------------------------------
    @torch.no_grad()
    def score_reference(self, icds, query) -> float:
        msgs = self.layout.conversation(icds, query, with_answer=True)
        text = self.processor.apply_chat_template(msgs, tokenize=False)
        images = [load_image(p) for p in prompting.images_in_order(icds, query)]
        enc = self.processor(text=[text], images=images, return_tensors="pt").to(self.device)
        logits = _at_least_float32(self.model(**enc).logits[0])
        ids = enc["input_ids"][0].tolist()
        a0, a1 = self._answer_span(ids)
        target = enc["input_ids"][0, a0:a1]
        ce = torch.nn.functional.cross_entropy(logits[a0 - 1 : a1 - 1], target)
        return float(torch.exp(-ce))

    # ---- fast path -----------------------------------------------------------------------------------------
    def clear_image_cache(self) -> None:
        """Drop cached image features and tokenised turns (the caches otherwise grow with every new example)."""
        self._features.clear()
        self._pending.clear()
        self._pieces.clear()

    @torch.no_grad()
    def _image_features(self, paths: Sequence[str]) -> list[torch.Tensor]:
        """Vision-tower features of each image (computed once while they stay in the LRU cache; the returned
        tensors stay valid whatever the cache evicts later).

        Each image is encoded in a forward of its own: batched, its patches would share the vision tower's matrices
        with whichever other images missed the cache at that moment, and on some CPUs (AVX-512 kernels pick their
        blocking by matrix size) its features would then depend in the last bits on that company — so a resumed
        shard or an evicted cache would store other bytes than an uninterrupted run (issue 20, item 2)."""
        todo = [p for p in dict.fromkeys(paths) if p not in self._features]
        self._load_pixels(todo)
        found = {p: f for p in dict.fromkeys(paths) if (f := self._features.get(p)) is not None}
        for p in todo:
            pix = self._pending.pop(p).to(self.device, self.dtype)
            thw = self._grids[p].to(self.device)
            (f,) = self.model.model.get_image_features(pix, thw, return_dict=True).pooler_output
            found[p] = f
            self._features.put(p, f)
        return [found[p] for p in paths]

    def _prefix_keys(self, row: _Piece, image_ids: dict[str, int]) -> np.ndarray:
        """Token ids with each image token replaced by a key unique to (image, token index in the image)."""
        keys = row.ids.copy()
        pos = np.flatnonzero(keys == self.image_token_id)
        if len(pos):
            counts = [self._n_image_tokens(p) for p in row.images]
            owner = np.repeat(np.arange(len(counts)), counts)
            image_key = np.array([image_ids[p] for p in row.images], dtype=np.int64)
            offset = np.arange(len(pos)) - np.repeat(np.cumsum([0] + counts)[:-1], counts)
            keys[pos] = -(image_key[owner] * 4096 + offset) - 1
        return keys

    def _embed(self, pieces: Sequence[tuple[_Piece, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded input embeddings (B, L, H) and M-RoPE ids (3, B, L) of token ranges [lo, hi) of rows;
        image tokens carry their image's cached vision features. Padding ids/positions are never attended."""
        L = max(hi - lo for _, lo, hi in pieces)
        ids = np.full((len(pieces), L), self.pad_id, dtype=np.int64)
        pos = np.zeros((3, len(pieces), L), dtype=np.int64)
        feats = []
        for b, (row, lo, hi) in enumerate(pieces):
            ids[b, : hi - lo] = row.ids[lo:hi]
            pos[:, b, : hi - lo] = row.pos[:, lo:hi]
            if row.images:
                skip = int(np.count_nonzero(row.ids[:lo] == self.image_token_id))
                take = int(np.count_nonzero(row.ids[lo:hi] == self.image_token_id))
                if take:
                    feats.append(torch.cat(self._image_features(row.images))[skip : skip + take])
        ids, pos = torch.from_numpy(ids).to(self.device), torch.from_numpy(pos).to(self.device)
        emb = self.model.get_input_embeddings()(ids)
        if feats:
            is_image = (ids == self.image_token_id)[..., None]
            emb = emb.masked_scatter(is_image, torch.cat(feats).to(emb.dtype))
        return emb, pos

    @torch.no_grad()
    def score(self, icd_seqs, queries) -> np.ndarray:
        self._load_pixels([p for s, q in zip(icd_seqs, queries) for p in prompting.images_in_order(s, q)])
        rows = [self._row(s, q, with_answer=True) for s, q in zip(icd_seqs, queries)]
        return self._score_rows(rows, [0] * len(rows))

    # `score_step(..., beam_rows=True)`: beam search scores the zero-shot row in the first step's forwards
    scores_beam_rows = True

    @torch.no_grad()
    def score_step(self, beams, candidates, query, order, *, beam_rows: bool = False):
        """All (beam, candidate) extensions of one beam-search step, batched across beams: each beam's shared
        prefix (its demonstrations, with construct_order `right`) is run once, rows of several beams share one
        forward. `beam_rows`: also P̄ of each beam's own row (beam ⊕ query), returned as a second list (step 0: the
        zero-shot row). A beam's row starts with the prefix its candidates share (its demonstrations; step 0: the
        chat head), so it *carries* that prefix: it runs whole in the prefix forward, is scored there, and its
        first tokens' keys and values are the prefix cache of the beam's candidate rows (causal attention: they do
        not depend on what follows). Nothing runs twice and nothing is padded for it. Before (issue 28) it was a
        group of its own: the whole zero-shot row ran as a "prefix" beside the head, whose row was padded to it,
        and again, padded to the longest candidate row, in the candidates' forward."""
        self._load_pixels([d.image for seq in (*beams, *candidates) for d in seq] + [query.image])
        rows, groups = [], []
        for g, (beam, cands) in enumerate(zip(beams, candidates)):
            rows += [self._row(extend(beam, c, order), query, with_answer=True) for c in cands]
            groups += [g] * len(cands)
        carriers = {}
        if beam_rows:
            for g, beam in enumerate(beams):
                carriers[g] = len(rows)
                rows.append(self._row(list(beam), query, with_answer=True))
                groups.append(g)
        flat = self._score_rows(rows, groups, carriers)
        n = sum(len(c) for c in candidates)
        out = np.split(flat[:n], np.cumsum([len(c) for c in candidates])[:-1])
        return (out, [float(x) for x in flat[n:]]) if beam_rows else out

    def _score_rows(self, rows: Sequence[_Piece], groups: Sequence[int], carriers: dict[int, int] | None = None
                    ) -> np.ndarray:
        """P̄ of every row. Rows of one group share a prefix (`_group_prefixes`); every group's prefix is run once,
        in one forward, and its KV cache serves the group's rows in whichever batch they fall. `carriers`: group →
        one of its rows that runs whole in that forward instead of the bare prefix (scored there, not again)."""
        spans = [self._answer_span(r.ids) for r in rows]
        self._image_features([p for r in rows for p in r.images])
        prefixes = self._group_prefixes(rows, groups, spans)
        slot = {g: i for i, g in enumerate(prefixes)}
        P = [prefixes[g][1] for g in groups]
        out = np.empty(len(rows), dtype=np.float64)
        kv = None
        carried = {}
        if max(P) > 0:
            carried = {g: c for g, c in (carriers or {}).items() if prefixes[g][1] > 0}
            # each group's prefix, or its carrier row up to the input of its last scored logit (it starts with the
            # prefix). Right-padded: a real token never attends a later pad, and pads are masked out of every row.
            runs = [(rows[c], 0, spans[c][1] - 1) if (c := carried.get(g)) is not None else (rows[rep], 0, n)
                    for g, (rep, n) in prefixes.items()]
            emb, pos = self._embed(runs)
            res = self.model.model(inputs_embeds=emb, position_ids=pos, use_cache=True)
            kv = [(layer.keys, layer.values) for layer in res.past_key_values.layers]
            if carried:
                idx = list(carried.values())
                hidden = [res.last_hidden_state[slot[g], spans[c][0] - 1 : spans[c][1] - 1] for g, c in carried.items()]
                out[idx] = self._mean_p(hidden, [rows[c] for c in idx], [spans[c] for c in idx])
        done = set(carried.values())
        rest = [b for b in range(len(rows)) if b not in done]
        for lo in range(0, len(rest), self.batch_size):
            part = rest[lo : lo + self.batch_size]
            out[part] = self._score_batch([rows[b] for b in part], [P[b] for b in part], [spans[b] for b in part], kv,
                                          [slot[groups[b]] for b in part])
        return out

    def _group_prefixes(self, rows, groups, spans) -> dict[int, tuple[int, int]]:
        """For each group: (row index of its representative, length of the longest prefix all its rows share —
        same token and, on image tokens, the same image — ending before the group's first scored logit)."""
        image_ids = {p: i for i, p in enumerate(dict.fromkeys(p for r in rows for p in r.images))}
        keys = [self._prefix_keys(r, image_ids) for r in rows]
        out: dict[int, tuple[int, int]] = {}
        for g in dict.fromkeys(groups):
            members = [b for b, gb in enumerate(groups) if gb == g]
            first = keys[members[0]]
            shared = min(spans[b][0] for b in members) - 1
            for b in members[1:]:
                n = min(shared, len(keys[b]))
                diff = np.flatnonzero(keys[b][:n] != first[:n])
                shared = int(diff[0]) if len(diff) else n
            out[g] = (members[0], max(shared, 0))
        return out

    def _score_batch(self, rows, P, spans, kv, slots) -> np.ndarray:
        """Rows whose first P[b] tokens are in the prefix KV `kv` at batch index slots[b]."""
        P_max = max(P)
        cache = None
        if P_max > 0:
            idx = torch.tensor(slots, device=self.device)
            cache = DynamicCache([(k[idx, :, :P_max], v[idx, :, :P_max]) for k, v in kv], config=self.model.config)
        # The rest of each row, up to the input of its last scored logit: the last answer token and what follows
        # it are never inputs to a scored position.
        emb, pos = self._embed([(r, p, a1 - 1) for r, p, (_, a1) in zip(rows, P, spans)])
        B, L = emb.shape[:2]
        att = torch.zeros(B, P_max + L, dtype=torch.long)
        for b, (p, (_, a1)) in enumerate(zip(P, spans)):
            att[b, :p] = 1
            att[b, P_max : P_max + a1 - 1 - p] = 1
        hidden = self.model.model(
            inputs_embeds=emb,
            position_ids=pos,
            attention_mask=att.to(self.device),
            past_key_values=cache,
            use_cache=False,
        ).last_hidden_state
        return self._mean_p([hidden[b, a0 - 1 - p : a1 - 1 - p] for b, (p, (a0, a1)) in enumerate(zip(P, spans))],
                            rows, spans)

    def _mean_p(self, hidden: Sequence[torch.Tensor], rows, spans) -> np.ndarray:
        """P̄ of each row from the hidden states at its answer-predicting positions: one lm_head call over all of
        them, then the per-row mean cross-entropy."""
        B = len(rows)
        logits = _at_least_float32(self.model.lm_head(torch.cat(list(hidden))))  # float64 models keep float64 P̄
        target = torch.from_numpy(np.concatenate([r.ids[a0:a1] for (a0, a1), r in zip(spans, rows)])).to(self.device)
        ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        n = torch.tensor([a1 - a0 for a0, a1 in spans], device=self.device)
        owner = torch.repeat_interleave(torch.arange(B, device=self.device), n)
        mean_ce = torch.zeros(B, device=self.device, dtype=ce.dtype).index_add_(0, owner, ce) / n.to(ce.dtype)
        return torch.exp(-mean_ce).double().cpu().numpy()

    # ---- generation ----------------------------------------------------------------------------------------
    def prompt_settings(self) -> dict:
        """What this adapter puts around a question and does to an answer (recorded in every results file)."""
        return {"prompt": "chat_template", "instruction": self.instruction, "postprocess": "strip"}

    def generation_inputs(self, icd_seqs, queries):
        """Processor encoding (left-padded) of the generation prompts: each conversation up to the assistant's
        generation header."""
        texts = [
            self._render(self.layout.conversation(s, q, with_answer=False), True) for s, q in zip(icd_seqs, queries)
        ]
        images = [load_image(p) for s, q in zip(icd_seqs, queries) for p in prompting.images_in_order(s, q)]
        return self.processor(text=texts, images=images, return_tensors="pt", padding=True, padding_side="left")

    @torch.no_grad()
    def generate(
        self, icd_seqs, queries, generation: GenerationSettings | dict | None = None, *, max_new_tokens: int | None = None
    ) -> list[str]:
        settings = resolve(generation, max_new_tokens)
        config = hf_generation_config(
            settings,
            eos_token_id=self.end_id,
            pad_token_id=self.pad_id,
            bos_token_id=self.model.generation_config.bos_token_id,
        )
        answers: list[str] = []
        for lo in range(0, len(queries), self.batch_size):
            seqs, qs = icd_seqs[lo : lo + self.batch_size], queries[lo : lo + self.batch_size]
            enc = self.generation_inputs(seqs, qs).to(self.device)
            out = self.model.generate(**enc, generation_config=config)
            new = out[:, enc["input_ids"].shape[1] :]
            answers += [a.strip() for a in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return answers
