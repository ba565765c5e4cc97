"""A chat template's text for a demonstration conversation, cut into per-turn pieces that can be cached.

ChatML templates (Qwen2 / Qwen2.5-VL) render each message on its own: the text of
`layout.conversation(icds, query)` (a `prompting.ChatLayout`, carrying the adapter's instruction; the probes use the
same layout, so the exactness check covers it) is `head + Σ block(d) + block(query)`, where `head` is what the template puts
before the first message (the default system turn) and a block is one example's user turn followed by its assistant
turn (or, for the query being answered, by the generation header). `ChatSegments` reads those pieces off the
template itself — rendering short probe conversations and taking the differences — and then checks the
decomposition against full renderings of probe conversations with 0–3 demonstrations, with and without the answer.
A template that numbers images, varies a turn with its position or otherwise does not decompose makes `exact`
False; callers then render every conversation whole.

`splits_before(tokenizer, text)` says whether tokenising `text` after any other text is the same as tokenising it
alone: true when `text` starts with a special added token that strips nothing to its left, because the tokenizer
cuts its input at added tokens before normalising and pre-tokenising the pieces in between.
"""
from __future__ import annotations

from collections.abc import Callable

from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.tracks.vqa.models import prompting

Render = Callable[[list[dict], bool], str]  # (messages, add_generation_prompt) -> text

_PROBES = [
    VQAExample(f"probe{i}", f"probe{i}.png", q, a)
    for i, (q, a) in enumerate(
        [("What is it?", "a cat"), ("How many?", "2"), ("Which colour is the sky?", "blue"), ("Où?", "ici")]
    )
]


def _suffix(longer: str, shorter: str) -> str | None:
    return longer[len(shorter) :] if longer.startswith(shorter) else None


class ChatSegments:
    def __init__(self, render: Render, layout: prompting.ChatLayout = prompting.ChatLayout()):  # noqa: B008 (frozen)
        self._render = render
        self.layout = layout
        p = _PROBES[0]
        self._ctx_user = render([layout.user_turn(p)], False)
        self._ctx_turns = render([layout.user_turn(p), layout.assistant_turn(p.answer)], False)
        gen = _suffix(render([layout.user_turn(p)], True), self._ctx_user)
        first_user = self.user(p)
        self.exact = gen is not None and first_user is not None and self._ctx_user.endswith(first_user)
        if not self.exact:
            return
        self.generation_header = gen
        self.head = self._ctx_user[: len(self._ctx_user) - len(first_user)]
        try:
            self.exact = all(
                self.text(_PROBES[:n], _PROBES[3], with_answer=w) == self._whole(_PROBES[:n], _PROBES[3], w)
                for n in range(4)
                for w in (True, False)
            )
        except ValueError:
            self.exact = False

    @staticmethod
    def probe_blocks() -> list[tuple[VQAExample, bool]]:
        return [(p, w) for p in _PROBES for w in (True, False)]

    def _whole(self, icds, query, with_answer: bool) -> str:
        return self._render(self.layout.conversation(icds, query, with_answer=with_answer), not with_answer)

    def user(self, ex: VQAExample) -> str | None:
        """The user turn of `ex` as rendered after an earlier demonstration."""
        p = _PROBES[0]
        lay = self.layout
        msgs = [lay.user_turn(p), lay.assistant_turn(p.answer), lay.user_turn(ex)]
        return _suffix(self._render(msgs, False), self._ctx_turns)

    def assistant(self, answer: str) -> str | None:
        """An assistant turn holding `answer`, as rendered after a user turn."""
        p = _PROBES[0]
        lay = self.layout
        return _suffix(self._render([lay.user_turn(p), lay.assistant_turn(answer)], False), self._ctx_user)

    def block(self, ex: VQAExample, *, with_answer: bool) -> str:
        """`ex`'s user turn, then its answer's assistant turn (a demonstration, or a scored query) or the
        generation header (a query to answer)."""
        user = self.user(ex)
        tail = self.assistant(ex.answer) if with_answer else self.generation_header
        if user is None or tail is None:
            raise ValueError("chat template does not render this turn as an extension of the conversation")
        return user + tail

    def text(self, icds, query, *, with_answer: bool) -> str:
        return self.head + "".join(self.block(d, with_answer=True) for d in icds) + self.block(
            query, with_answer=with_answer
        )


def splits_before(tokenizer, text: str) -> bool:
    for token in tokenizer.added_tokens_decoder.values():
        if token.special and not token.lstrip and token.content and text.startswith(token.content):
            return True
    return False
