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

from ..data.records import VQAExample

DEFAULT_INSTRUCTION = "Answer the question using a single word or phrase."
FLAMINGO_POSTPROCESS = ("open_flamingo_vqa", "none")


@dataclass(frozen=True)
class PromptSettings:
    """Config `prompt`: the chat models' instruction and Flamingo's answer post-processing."""

    instruction: str = DEFAULT_INSTRUCTION
    flamingo_postprocess: str = "open_flamingo_vqa"

    def __post_init__(self):
        if not isinstance(self.instruction, str):
            raise ValueError(f"prompt.instruction must be a string, got {self.instruction!r}")
        if self.flamingo_postprocess not in FLAMINGO_POSTPROCESS:
            raise ValueError(
                f"prompt.flamingo_postprocess must be one of {FLAMINGO_POSTPROCESS}, got {self.flamingo_postprocess!r}"
            )

    @classmethod
    def from_config(cls, block: dict | None) -> PromptSettings:
        block = dict(block or {})
        known = {"instruction", "flamingo_postprocess"}
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
