"""How demonstrations and the query are laid out as chat messages (shared by every chat-template adapter and by
the demo model's meta-training, so the model is trained on exactly the layout it is evaluated with).

Each demonstration is a user turn (image, question) followed by an assistant turn (its answer); the query is a
final user turn, followed either by the assistant turn holding the answer to score, or by the generation prompt.

Short-answer instruction (config `prompt.instruction`, default `DEFAULT_INSTRUCTION`, the one Qwen-VL and
LLaVA-1.5 use on VQAv2/OK-VQA): when non-empty it follows the question in *every* user turn, demonstrations and
query alike, on its own line — the user text is ``f"{question}\\n{instruction}"`` after the image. Demonstrations
thus look exactly like the query they precede, and the InfoScore beam search (scoring) and inference (generation)
build their turns through the same `ChatLayout`, so both see the identical prompt. An empty instruction leaves the
question alone (the layout the shipped demo model was meta-trained on).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from leverplus.tracks.vqa.data.records import VQAExample

DEFAULT_INSTRUCTION = "Answer the question using a single word or phrase."
FLAMINGO_POSTPROCESS = ("open_flamingo_vqa", "none")
# Which generated tokens end a Flamingo answer: OpenFlamingo's `Flamingo.generate` stops at `<|endofchunk|>` (its
# default eos, what OpenFlamingo's evaluate.py uses); Lever-LM passes the tokenizer's eos (`<|endoftext|>`) instead,
# decodes everything generated without special tokens and lets the post-processing cut; `endofchunk_eos`: either.
FLAMINGO_STOP = ("endofchunk_eos", "endofchunk", "eos")


@dataclass(frozen=True)
class PromptSettings:
    """Config `prompt`: the chat models' instruction, Flamingo's answer post-processing, stop tokens and InfoScore
    answer span, and the preset (config `preset`) they were filled from."""

    instruction: str = DEFAULT_INSTRUCTION
    flamingo_postprocess: str = "open_flamingo_vqa"
    flamingo_stop: str = "endofchunk_eos"
    # InfoScore's answer span for Flamingo: False = the answer tokens only (as the Qwen2.5-VL adapter, which does
    # not score its end-of-turn token: both models' P̄ measure the same thing); True = answer + `<|endofchunk|>`,
    # Lever-LM's `get_info_score` (its scored suffix is answer, `<|endofchunk|>` and the eos, which is its pad token
    # and therefore ignored)
    flamingo_score_eoc: bool = False
    preset: str | None = None

    def __post_init__(self):
        if not isinstance(self.instruction, str):
            raise ValueError(f"prompt.instruction must be a string, got {self.instruction!r}")
        if self.flamingo_postprocess not in FLAMINGO_POSTPROCESS:
            raise ValueError(
                f"prompt.flamingo_postprocess must be one of {FLAMINGO_POSTPROCESS}, got {self.flamingo_postprocess!r}"
            )
        if self.flamingo_stop not in FLAMINGO_STOP:
            raise ValueError(f"prompt.flamingo_stop must be one of {FLAMINGO_STOP}, got {self.flamingo_stop!r}")
        if not isinstance(self.flamingo_score_eoc, bool):
            raise ValueError(f"prompt.flamingo_score_eoc must be true or false, got {self.flamingo_score_eoc!r}")

    @classmethod
    def from_config(cls, block: dict | None) -> PromptSettings:
        block = dict(block or {})
        known = {"instruction", "flamingo_postprocess", "flamingo_stop", "flamingo_score_eoc", "preset"}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"prompt: unknown key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**block)


@dataclass(frozen=True)
class ChatLayout:
    """The message layout with a given instruction (empty: none)."""

    instruction: str = ""

    def question_text(self, question: str) -> str:
        return f"{question}\n{self.instruction}" if self.instruction else question

    def user_turn(self, ex: VQAExample) -> dict:
        return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.question_text(ex.question)}]}

    @staticmethod
    def assistant_turn(answer: str) -> dict:
        return {"role": "assistant", "content": [{"type": "text", "text": answer}]}

    def conversation(self, icds: Sequence[VQAExample], query: VQAExample, *, with_answer: bool) -> list[dict]:
        msgs: list[dict] = []
        for d in icds:
            msgs += [self.user_turn(d), self.assistant_turn(d.answer)]
        msgs.append(self.user_turn(query))
        if with_answer:
            msgs.append(self.assistant_turn(query.answer))
        return msgs


def user_turn(ex: VQAExample, *, instruction: str = "") -> dict:
    return ChatLayout(instruction).user_turn(ex)


def assistant_turn(answer: str) -> dict:
    return ChatLayout.assistant_turn(answer)


def conversation(icds: Sequence[VQAExample], query: VQAExample, *, with_answer: bool, instruction: str = "") -> list[dict]:
    return ChatLayout(instruction).conversation(icds, query, with_answer=with_answer)


def images_in_order(icds: Sequence[VQAExample], query: VQAExample) -> list[str]:
    return [d.image for d in icds] + [query.image]
