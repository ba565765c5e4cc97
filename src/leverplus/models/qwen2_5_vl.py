"""Qwen2.5-VL adapter (transformers `Qwen2_5_VLForConditionalGeneration`).

Scored sequence: the chat conversation of `prompting.conversation(icds, query, with_answer=True)`. The answer
tokens are located in the token ids themselves: the scored span starts right after the last occurrence of the
assistant generation header (the token ids the chat template appends for `add_generation_prompt=True`, derived
once from the template) and ends before the next `<|im_end|>`; the end-of-turn token is not scored.

Fast path (`score`): every image is run through the vision tower once per adapter lifetime and its features are
cached by path; rows are tokenised with the tokenizer alone (image pads expanded to the image's grid, as the
processor does — a test checks the ids equal the processor's); the token prefix that all rows of a batch share is
run once and its KV cache is reused for every row (with construct_order `right`, this is the whole beam's
demonstrations); rows are right-padded, so padding never changes a real token's attention. Positions are the
model's own 3-D M-RoPE ids (`get_rope_index`) of the full row, sliced.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.images import load_image
from ..data.records import VQAExample
from . import prompting
from .base import ICLModel, register_adapter


def _find_last(haystack: list[int], needle: list[int]) -> int:
    n = len(needle)
    for start in range(len(haystack) - n, -1, -1):
        if haystack[start : start + n] == needle:
            return start
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
    ):
        from transformers import Qwen2_5_VLForConditionalGeneration

        from .qwen_processor import load_processor

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
        self._header = self._assistant_header()
        self._pixels: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._n_tokens: dict[str, int] = {}
        self._features: dict[str, torch.Tensor] = {}

    # ---- tokenisation -------------------------------------------------------------------------------------
    def _assistant_header(self) -> list[int]:
        """Token ids the chat template adds for the assistant's turn, read off the template itself."""
        probe = [prompting.user_turn(VQAExample("probe", "", "probe", ""))]
        plain = self.processor.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
        gen = self.processor.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        if not gen.startswith(plain):
            raise ValueError("chat template: the generation prompt is not an extension of the conversation")
        ids_plain = self.tokenizer(plain, add_special_tokens=False)["input_ids"]
        ids_gen = self.tokenizer(gen, add_special_tokens=False)["input_ids"]
        if ids_gen[: len(ids_plain)] != ids_plain:
            raise ValueError("chat template: generation header does not tokenise as a suffix")
        return ids_gen[len(ids_plain) :]

    def _pixels_of(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        if path not in self._pixels:
            enc = self.processor.image_processor(images=[load_image(path)], return_tensors="pt")
            self._pixels[path] = (enc["pixel_values"], enc["image_grid_thw"])
        return self._pixels[path]

    def _n_image_tokens(self, path: str) -> int:
        if path not in self._n_tokens:
            self._n_tokens[path] = int(self._pixels_of(path)[1].prod()) // (self.merge**2)
        return self._n_tokens[path]

    def _tokenise(self, icds: Sequence[VQAExample], query: VQAExample, *, with_answer: bool) -> list[int]:
        return self._tokenise_many([icds], [query], with_answer=with_answer)[0]

    def _tokenise_many(self, icd_seqs, queries, *, with_answer: bool) -> list[list[int]]:
        """Token ids of each row: the chat template's text with every image pad expanded to the image's grid,
        encoded in one batched tokenizer call."""
        texts = [self._expanded_text(s, q, with_answer=with_answer) for s, q in zip(icd_seqs, queries)]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _expanded_text(self, icds: Sequence[VQAExample], query: VQAExample, *, with_answer: bool) -> str:
        text = self.processor.apply_chat_template(
            prompting.conversation(icds, query, with_answer=with_answer),
            tokenize=False,
            add_generation_prompt=not with_answer,
        )
        pad = self.processor.image_token
        pieces = text.split(pad)
        images = prompting.images_in_order(icds, query)
        if len(pieces) != len(images) + 1:
            raise ValueError(f"expected {len(images)} image placeholders, found {len(pieces) - 1}")
        expanded = pieces[0]
        for path, piece in zip(images, pieces[1:]):
            expanded += pad * self._n_image_tokens(path) + piece
        return expanded

    def _answer_span(self, ids: list[int]) -> tuple[int, int]:
        start = _find_last(ids, self._header)
        if start < 0:
            raise ValueError("no assistant turn in the scored sequence")
        a0 = start + len(self._header)
        try:
            a1 = ids.index(self.end_id, a0)
        except ValueError:
            raise ValueError("the scored answer has no end-of-turn token") from None
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
        msgs = prompting.conversation(icds, query, with_answer=True)
        text = self.processor.apply_chat_template(msgs, tokenize=False)
        images = [load_image(p) for p in prompting.images_in_order(icds, query)]
        enc = self.processor(text=[text], images=images, return_tensors="pt").to(self.device)
        logits = self.model(**enc).logits[0].float()
        ids = enc["input_ids"][0].tolist()
        a0, a1 = self._answer_span(ids)
        target = enc["input_ids"][0, a0:a1]
        ce = torch.nn.functional.cross_entropy(logits[a0 - 1 : a1 - 1], target)
        return float(torch.exp(-ce))

    # ---- fast path -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _image_features(self, paths: Sequence[str]) -> list[torch.Tensor]:
        todo = [p for p in dict.fromkeys(paths) if p not in self._features]
        for i in range(0, len(todo), 32):
            chunk = todo[i : i + 32]
            pix = torch.cat([self._pixels_of(p)[0] for p in chunk]).to(self.device, self.dtype)
            thw = torch.cat([self._pixels_of(p)[1] for p in chunk]).to(self.device)
            out = self.model.model.get_image_features(pix, thw, return_dict=True).pooler_output
            for p, f in zip(chunk, out):
                self._features[p] = f
        return [self._features[p] for p in paths]

    def _prefix_keys(self, ids: list[int], images: Sequence[str], image_ids: dict[str, int]) -> np.ndarray:
        """Token ids with each image token replaced by a key unique to (image, token index in the image)."""
        keys = np.asarray(ids, dtype=np.int64)
        pos = np.flatnonzero(keys == self.image_token_id)
        if len(pos):
            owner = np.repeat(np.arange(len(images)), [self._n_image_tokens(p) for p in images])
            image_key = np.array([image_ids[p] for p in images], dtype=np.int64)
            offset = np.arange(len(pos)) - np.repeat(
                np.cumsum([0] + [self._n_image_tokens(p) for p in images])[:-1],
                [self._n_image_tokens(p) for p in images],
            )
            keys[pos] = -(image_key[owner] * 4096 + offset) - 1
        return keys

    def _rows_inputs(self, rows: Sequence[list[int]], paths: Sequence[Sequence[str]]):
        """Embeddings (L_b, H) and 3-D position ids (3, L_b) of each full row. The batch's new images go through
        the vision tower in one call, and the M-RoPE ids of all rows come from one `get_rope_index` call on the
        right-padded batch (padding is excluded by its attention mask)."""
        self._image_features([p for ps in paths for p in ps])
        t = torch.full((len(rows), max(len(r) for r in rows)), self.pad_id, dtype=torch.long)
        att = torch.zeros_like(t)
        for b, r in enumerate(rows):
            t[b, : len(r)] = torch.tensor(r)
            att[b, : len(r)] = 1
        t, att = t.to(self.device), att.to(self.device)
        mm = ((t == self.image_token_id) & (att == 1)).int()
        all_paths = [p for ps in paths for p in ps]
        thw = torch.cat([self._pixels_of(p)[1] for p in all_paths]).to(self.device) if all_paths else None
        pos, _ = self.model.model.get_rope_index(t, mm, image_grid_thw=thw, attention_mask=att)
        emb_all = self.model.get_input_embeddings()(t)
        out = []
        for b, (r, ps) in enumerate(zip(rows, paths)):
            emb = emb_all[b, : len(r)]
            if ps:
                feats = torch.cat(self._image_features(ps)).to(emb.dtype)
                emb = emb.masked_scatter(mm[b, : len(r), None].bool(), feats)
            out.append((emb, pos[:, b, : len(r)]))
        return out

    @torch.no_grad()
    def score(self, icd_seqs, queries) -> np.ndarray:
        out = np.empty(len(queries), dtype=np.float64)
        for lo in range(0, len(queries), self.batch_size):
            hi = min(lo + self.batch_size, len(queries))
            out[lo:hi] = self._score_batch(icd_seqs[lo:hi], queries[lo:hi])
        return out

    def _score_batch(self, icd_seqs, queries) -> np.ndarray:
        rows = self._tokenise_many(icd_seqs, queries, with_answer=True)
        spans = [self._answer_span(r) for r in rows]
        paths = [prompting.images_in_order(s, q) for s, q in zip(icd_seqs, queries)]
        inputs = self._rows_inputs(rows, paths)
        # Longest prefix shared by every row — same token and, on image tokens, the same image — ending before
        # the first scored logit of any row.
        image_ids = {p: i for i, p in enumerate(dict.fromkeys(p for ps in paths for p in ps))}
        keys = [self._prefix_keys(r, ps, image_ids) for r, ps in zip(rows, paths)]
        shared = min(len(k) for k in keys)
        for k in keys[1:]:
            same = np.flatnonzero(k[:shared] != keys[0][:shared])
            shared = int(same[0]) if len(same) else shared
        shared = min(shared, min(a0 for a0, _ in spans) - 1)
        cache = None
        if shared > 0:
            emb, pos = inputs[0]
            out = self.model.model(
                inputs_embeds=emb[None, :shared], position_ids=pos[:, None, :shared], use_cache=True
            )
            cache = out.past_key_values
        B = len(rows)
        L = max(len(r) for r in rows) - shared
        H = inputs[0][0].shape[-1]
        emb_b = torch.zeros(B, L, H, device=self.device, dtype=inputs[0][0].dtype)
        pos_b = torch.zeros(3, B, L, device=self.device, dtype=torch.long)
        att = torch.zeros(B, shared + L, device=self.device, dtype=torch.long)
        att[:, :shared] = 1
        for b, ((emb, pos), r) in enumerate(zip(inputs, rows)):
            n = len(r) - shared
            emb_b[b, :n] = emb[shared:]
            pos_b[:, b, :n] = pos[:, shared:]
            pos_b[:, b, n:] = pos[:, -1:] + 1  # padding positions: never attended by real tokens
            att[b, shared : shared + n] = 1
        if cache is not None and B > 1:
            cache.batch_repeat_interleave(B)  # in place: the prefix cache serves this batch only
        hidden = self.model.model(
            inputs_embeds=emb_b, position_ids=pos_b, attention_mask=att, past_key_values=cache, use_cache=False
        ).last_hidden_state
        # One lm_head call over the answer-predicting positions of every row, then the per-row mean CE.
        h = torch.cat([hidden[b, a0 - 1 - shared : a1 - 1 - shared] for b, (a0, a1) in enumerate(spans)])
        logits = self.model.lm_head(h).float()
        target = torch.tensor([t for (a0, a1), r in zip(spans, rows) for t in r[a0:a1]], device=self.device)
        ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        owner = torch.repeat_interleave(
            torch.arange(B, device=self.device), torch.tensor([a1 - a0 for a0, a1 in spans], device=self.device)
        )
        mean_ce = torch.zeros(B, device=self.device, dtype=ce.dtype).index_add_(0, owner, ce)
        mean_ce /= torch.tensor([a1 - a0 for a0, a1 in spans], device=self.device, dtype=ce.dtype)
        return torch.exp(-mean_ce).double().cpu().numpy()

    # ---- generation ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, icd_seqs, queries, max_new_tokens: int = 10) -> list[str]:
        answers: list[str] = []
        for lo in range(0, len(queries), self.batch_size):
            seqs, qs = icd_seqs[lo : lo + self.batch_size], queries[lo : lo + self.batch_size]
            texts = [
                self.processor.apply_chat_template(
                    prompting.conversation(s, q, with_answer=False), tokenize=False, add_generation_prompt=True
                )
                for s, q in zip(seqs, qs)
            ]
            images = [load_image(p) for s, q in zip(seqs, qs) for p in prompting.images_in_order(s, q)]
            enc = self.processor(
                text=texts, images=images, return_tensors="pt", padding=True, padding_side="left"
            ).to(self.device)
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=self.end_id,
                pad_token_id=self.pad_id,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            answers += [a.strip() for a in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return answers
