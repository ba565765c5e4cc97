"""How demonstrations and the query are laid out as chat messages (shared by every chat-template adapter and by
the demo model's meta-training, so the model is trained on exactly the layout it is evaluated with).

Each demonstration is a user turn (image, question) followed by an assistant turn (its answer); the query is a
final user turn, followed either by the assistant turn holding the answer to score, or by the generation prompt.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..data.records import VQAExample


def user_turn(ex: VQAExample) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ex.question}]}


def assistant_turn(answer: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": answer}]}


def conversation(icds: Sequence[VQAExample], query: VQAExample, *, with_answer: bool) -> list[dict]:
    msgs: list[dict] = []
    for d in icds:
        msgs += [user_turn(d), assistant_turn(d.answer)]
    msgs.append(user_turn(query))
    if with_answer:
        msgs.append(assistant_turn(query.answer))
    return msgs


def images_in_order(icds: Sequence[VQAExample], query: VQAExample) -> list[str]:
    return [d.image for d in icds] + [query.image]
