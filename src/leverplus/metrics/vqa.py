"""VQA accuracy with the semantics of a named VQA evaluation variant (``metrics.vqa_eval``).

Three variants exist in published work and give different numbers on the same predictions
(docs/metrics.md has the separating examples and which tables use which):

* ``official`` (default) -- GT-Vision-Lab/VQA master, commit ``a013f00`` ("Fixed processing answers
  bug", 2021), ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``: prediction and answers get
  ``\\n``/``\\t`` -> space and ``strip()``; *only when the (stripped) answers of a question are not all
  identical* both sides get punctuation processing + lowercase, number words -> digits, articles
  dropped, contractions; otherwise both are compared as stripped, case and punctuation included.
* ``official_2016`` -- the same file at ``458a8b2`` (2016; ``c4e6a0e``, the Python 3 pull request,
  only changes ``print``): the prediction is always fully normalised, the answers are never
  stripped and get only the punctuation step, and only when they are not all identical.
* ``lever_lm`` -- Lever-LM ``open_mmicl/metrics/vqa_metrics.py`` (identical to OpenFlamingo's
  ``open_flamingo/eval/vqa_metric.py`` since its commit ``60a5fd6``, i.e. OpenFlamingo v2): both
  sides always stripped and fully normalised.

Shared by all three: the 21-mark punctuation list (``{ } - !`` in, ``:`` and ``'`` out); the
punctuation step deletes every mark when the text has a ``digit,digit`` pattern or the mark touches a
space, else replaces it by a space, then deletes periods not followed by a digit (at most 32: the
reference passes ``re.UNICODE`` as ``count``); per question the mean over the answers of
``min(1, #other answers matching / 3)``; overall ``round(100 * sum(acc) / n, 2)``.

``stem=True`` applies the OK-VQA answer stemming (OpenFlamingo's ``ok_vqa_utils.OKVQAStemmer``, NLTK word
tokenisation included) to the prediction before the variant's normalisation, whatever the variant; see
:func:`okvqa_stem` for its two modes (the signature records which ran).  It is off by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from leverplus.metrics import stats
from leverplus.metrics._okvqa_stems import MANUAL_MATCHES
from leverplus.metrics.io import MetricsInputError, align
from leverplus.metrics.signature import ci_settings, make_signature, package_version

PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})

# The official contraction table, as "key=value" pairs (keys with capitals never
# match because the text is lowercased first -- kept for fidelity).
_CONTRACTION_PAIRS = """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's
howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd
itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't
mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at
'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've
shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's
someoned=someone'd someoned've=someone'd've someone'dve=someone'd've someonell=someone'll
someones=someone's somethingd=something'd somethingd've=something'd've
something'dve=something'd've somethingll=something'll thats=that's thered=there'd
thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas
wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's
whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's
whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't
wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll
yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
you'dve=you'd've youll=you'll youre=you're youve=you've
"""
CONTRACTIONS: dict[str, str] = dict(p.split("=", 1) for p in _CONTRACTION_PAIRS.split())

# The official pattern is "(?!<=\d)(\.)(?!\d)": the first group is a negative
# *lookahead* for the literal "<=" + digit (a mistyped lookbehind); kept verbatim in
# meaning so that e.g. "2.5" keeps its period but "5." and "a.b" lose theirs.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_OFFICIAL_PERIOD_COUNT = int(re.UNICODE)  # 32, see module docstring


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation`` (applied to predictions and to gt answers)."""
    delete_all = _COMMA_STRIP.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if delete_all or (mark + " ") in text or (" " + mark) in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, count=_OFFICIAL_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle`` (predictions only)."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(s: str) -> str:
    """Full normalisation (strip, punctuation, lowercase, digits, articles, contractions); which side gets it,
    and when, depends on the variant (see VQA_EVALS)."""
    s = s.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(s))


# ----------------------------------------------------------------------------------
# OK-VQA stemming (open_flamingo's ok_vqa_utils.OKVQAStemmer)
# ----------------------------------------------------------------------------------
# Reference: mlfoundations/open_flamingo@655f693fbfa04cd6e9a987d960654624d48917cf open_flamingo/eval/ok_vqa_utils.py
# (the file last changed in bcf220c; identical in the open-flamingo 2.0.1 package). Its `stem`:
#   tokens = nltk.tokenize.word_tokenize(text); tags = nltk.pos_tag(tokens)
#   per token: manual table → else "-ing" words: WordNetLemmatizer().lemmatize(w, VERB)
#              → else NNS/NNPS: inflection.singularize(w); joined with single spaces.
# word_tokenize = punkt sentence split (NLTK data `punkt_tab`) + NLTK's Treebank word tokenizer on each sentence;
# pos_tag needs `averaged_perceptron_tagger_eng`, the lemmatiser `wordnet`. The tokenizer itself is code (no data).
STEM_REFERENCE = "mlfoundations/open_flamingo@655f693fbfa04cd6e9a987d960654624d48917cf:open_flamingo/eval/ok_vqa_utils.py"
STEM_MODES = ("okvqa-nltk", "okvqa-nltk-approx")
_NLTK_DATA = {"punkt_tab": "tokenizers/punkt_tab/english/", "averaged_perceptron_tagger_eng":
              "taggers/averaged_perceptron_tagger_eng/", "wordnet": "corpora/wordnet"}
# words the approximation must not singularise (a tagger would not call them NNS): verbs, pronouns, adverbs, ...
_NOT_PLURAL = frozenset(
    "is was has does this his its as us yes gas bus plus always perhaps series species news "
    "lens glass grass dress bass chess class boss less across thus physics mathematics "
    "politics gymnastics aerobics athletics economics pants scissors shorts".split()
)


def _nltk_has(resource: str) -> bool:
    import nltk

    for path in (_NLTK_DATA[resource], _NLTK_DATA[resource].rstrip("/") + ".zip"):
        try:
            nltk.data.find(path)
            return True
        except LookupError:
            continue
    return False


def stem_mode() -> str:
    """``okvqa-nltk`` (the reference procedure exactly) where NLTK's punkt_tab, averaged_perceptron_tagger_eng and
    wordnet data are installed; else ``okvqa-nltk-approx`` (see `okvqa_stem`)."""
    return "okvqa-nltk" if all(_nltk_has(r) for r in _NLTK_DATA) else "okvqa-nltk-approx"


def _word_tokenize(text: str, mode: str) -> list[str]:
    from nltk.tokenize import NLTKWordTokenizer, word_tokenize

    if mode == "okvqa-nltk":
        return word_tokenize(text)
    return NLTKWordTokenizer().tokenize(text)  # word_tokenize(text, preserve_line=True): no sentence split


def _looks_plural(word: str) -> bool:
    import inflection

    if word.lower() in _NOT_PLURAL or not word.replace("-", "").isalpha() or len(word) <= 3:
        return False
    return inflection.singularize(word) != word


def okvqa_stem(text: str, mode: str | None = None) -> str:
    """OK-VQA v1.1 answer stemming as OpenFlamingo's ``OKVQAStemmer.stem`` (see `STEM_REFERENCE`).

    ``mode`` (None: `stem_mode()`):

    * ``okvqa-nltk`` — the reference procedure: NLTK ``word_tokenize``, ``pos_tag``, the manual table, WordNet verb
      lemmas for "-ing" words, ``inflection.singularize`` for NNS/NNPS words. Needs the NLTK data named above.
    * ``okvqa-nltk-approx`` — what runs without that data: the same NLTK word tokenizer (so "domino's" → "domino 's",
      "don't know" → "do n't know", exactly as the reference) without the punkt sentence split (predictions are
      one line; a split only separates a sentence-final period, which the VQA normalisation drops anyway), the same
      manual table, "-ing" words left as they are (no WordNet), and ``inflection.singularize`` for words that look
      plural (inflection changes them, longer than 3 letters, not in a short list of non-nouns) instead of the
      tagger's NNS/NNPS. The signature records which mode ran.
    """
    import inflection

    mode = mode or stem_mode()
    if mode not in STEM_MODES:
        raise ValueError(f"unknown OK-VQA stemming mode {mode!r}; known: {STEM_MODES}")
    tokens = _word_tokenize(text, mode)
    if mode == "okvqa-nltk":
        import nltk

        tags = [p for _, p in nltk.pos_tag(tokens)]
        lemmatize = nltk.stem.WordNetLemmatizer().lemmatize
    else:
        tags = ["NNS" if _looks_plural(w) else "" for w in tokens]
        lemmatize = None
    out = []
    for w, p in zip(tokens, tags):
        if w in MANUAL_MATCHES:
            w = MANUAL_MATCHES[w]
        elif w.endswith("ing"):
            if lemmatize is not None:
                w = lemmatize(w, "v")
        elif p.startswith("NNS") or p.startswith("NNPS"):
            w = inflection.singularize(w)
        out.append(w)
    return " ".join(out)


def _stem_arg(stem) -> str | None:
    """`stem` as a mode: False/None → no stemming, True → `stem_mode()`, a mode name → that mode."""
    if stem is False or stem is None:
        return None
    if stem is True:
        return stem_mode()
    if stem in STEM_MODES:
        return stem
    raise ValueError(f"stem must be true, false or one of {STEM_MODES}, got {stem!r}")


# ----------------------------------------------------------------------------------
# Accuracy
# ----------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------
# Evaluation variants
# ----------------------------------------------------------------------------------
_FULL = "punct+lower+digits+articles+contractions"


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _full(text: str) -> str:
    return process_digit_article(process_punctuation(text))


def _prepare_official(pred: str, answers: list[str]) -> tuple[str, list[str]]:
    gts = [_clean(a) for a in answers]
    pred = _clean(pred)
    if len(set(gts)) > 1:
        return _full(pred), [_full(g) for g in gts]
    return pred, gts


def _prepare_official_2016(pred: str, answers: list[str]) -> tuple[str, list[str]]:
    pred = normalize_answer(pred)
    if len(set(answers)) > 1:
        return pred, [process_punctuation(a) for a in answers]
    return pred, list(answers)


def _prepare_lever_lm(pred: str, answers: list[str]) -> tuple[str, list[str]]:
    return normalize_answer(pred), [normalize_answer(a) for a in answers]


@dataclass(frozen=True)
class VQAEvalVariant:
    """One VQA evaluation: its reference code (repo@commit:path) and how it normalises both sides."""

    name: str
    reference: str
    gt_norm: str
    pred_norm: str
    prepare: Callable[[str, list[str]], tuple[str, list[str]]]


VQA_EVALS: dict[str, VQAEvalVariant] = {
    "official": VQAEvalVariant(
        "official",
        "GT-Vision-Lab/VQA@a013f0043c1e2cdc995922dfe257f7149aa9af06:PythonEvaluationTools/vqaEvaluation/vqaEval.py",
        gt_norm=f"strip+{_FULL}-if-answers-differ",
        pred_norm=f"strip+{_FULL}-if-answers-differ",
        prepare=_prepare_official,
    ),
    "official_2016": VQAEvalVariant(
        "official_2016",
        "GT-Vision-Lab/VQA@458a8b268b1a239dc388e0af4423f3fe7477b04f:PythonEvaluationTools/vqaEvaluation/vqaEval.py",
        gt_norm="punct-if-answers-differ",
        pred_norm=_FULL,
        prepare=_prepare_official_2016,
    ),
    "lever_lm": VQAEvalVariant(
        "lever_lm",
        "ForJadeForest/Lever-LM@11d61e44b3e9c0b0b972b37b2a1b6ec366530d5f:open_mmicl/metrics/vqa_metrics.py",
        gt_norm=f"strip+{_FULL}",
        pred_norm=f"strip+{_FULL}",
        prepare=_prepare_lever_lm,
    ),
}
DEFAULT_VQA_EVAL = "official"
# reference code of each variant (was a single VQA_EVAL_REVISION pinned to c4e6a0e = official_2016)
VQA_EVAL_REVISIONS: dict[str, str] = {k: v.reference.split(":", 1)[0] for k, v in VQA_EVALS.items()}
# what results files written before the variants existed recorded as settings["eval"]
_LEGACY_EVAL = {"GT-Vision-Lab/VQA@c4e6a0e4e84b9702d99800d3393652d92b5df224": "official_2016"}
_STEM_VALUES = {"no": False, False: False, "okvqa-nltk": "okvqa-nltk", "okvqa-nltk-approx": "okvqa-nltk-approx"}


def get_vqa_eval(name: str) -> VQAEvalVariant:
    try:
        return VQA_EVALS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown VQA evaluation {name!r}; known: {', '.join(VQA_EVALS)}") from None


def scoring_from_settings(settings: dict, what: str) -> dict:
    """``{"vqa_eval", "stem"}`` that reproduce the per-item accuracies recorded in ``settings``
    (the ``settings`` of a score_vqa result); ``what`` names the file in error messages."""
    if not isinstance(settings, dict):
        raise MetricsInputError(f"{what}: no VQA 'settings' recorded")
    raw_eval = settings.get("eval")
    vqa_eval = _LEGACY_EVAL.get(raw_eval, raw_eval)
    if vqa_eval not in VQA_EVALS:
        raise MetricsInputError(f"{what}: unknown VQA evaluation settings.eval={raw_eval!r}; known: {', '.join(VQA_EVALS)}")
    raw_stem = settings.get("stem", "no")
    if raw_stem == "okvqa-approx":
        raise MetricsInputError(
            f"{what}: settings.stem='okvqa-approx' is the regex approximation this version replaced by NLTK's "
            "tokenizer (okvqa-nltk / okvqa-nltk-approx); rescore the predictions"
        )
    if raw_stem not in _STEM_VALUES:
        raise MetricsInputError(f"{what}: unknown settings.stem={raw_stem!r}; expected 'no' or one of {STEM_MODES}")
    mode = _STEM_VALUES[raw_stem]
    if mode == "okvqa-nltk" and stem_mode() != "okvqa-nltk":
        raise MetricsInputError(
            f"{what}: recorded with the reference OK-VQA stemming (okvqa-nltk), which needs NLTK's punkt_tab, "
            "averaged_perceptron_tagger_eng and wordnet data; this machine lacks them (nltk.download(...))"
        )
    return {"vqa_eval": vqa_eval, "stem": mode}


# ----------------------------------------------------------------------------------
# Accuracy
# ----------------------------------------------------------------------------------
def vqa_accuracy(
    prediction: str, answers: Sequence[str], *, stem: bool = False, vqa_eval: str = DEFAULT_VQA_EVAL
) -> float:
    """Accuracy of one prediction against its human answers, in [0, 1], under ``vqa_eval``."""
    variant = get_vqa_eval(vqa_eval)
    answers = [str(a) for a in answers]
    if not answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    mode = _stem_arg(stem)
    pred = okvqa_stem(prediction, mode) if mode else prediction
    pred, gts = variant.prepare(pred, answers)
    matches = [g == pred for g in gts]
    total = sum(matches)
    accs = [min(1.0, float(total - m) / 3) for m in matches]
    return float(sum(accs)) / len(accs)


EXPECTED_ANSWERS = 10  # answers per question in VQAv2 and OK-VQA (the official evaluation's leave-one-out assumes 10)


def _answers_cell(value, where: str) -> list[str]:
    """A references ``answers`` cell as a list of strings; anything else stops with ``where`` and the problem."""
    if isinstance(value, str):
        raise MetricsInputError(f"{where}: 'answers' is the string {value!r}, expected a list of {EXPECTED_ANSWERS} answers")
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise MetricsInputError(f"{where}: 'answers' is {type(value).__name__}, expected a list of {EXPECTED_ANSWERS} answers")
    if len(value) == 0:
        raise MetricsInputError(f"{where}: 'answers' is an empty list")
    bad = [a for a in value if not isinstance(a, str)]
    if bad:
        raise MetricsInputError(f"{where}: 'answers' holds a non-string item {bad[0]!r} ({type(bad[0]).__name__})")
    return list(value)


def _prediction_cell(value, where: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise MetricsInputError(f"{where}: 'prediction' is null (write \"\" for an empty answer)")
    if not isinstance(value, str):
        raise MetricsInputError(f"{where}: 'prediction' is {type(value).__name__}, expected a string")
    return value


def _checked_rows(predictions_df, references_df, pred_name, ref_name):
    """(id, prediction, answers, reference row) in prediction order, every cell checked (row numbers 1-based)."""
    preds = predictions_df.assign(_row=np.arange(1, len(predictions_df) + 1))
    refs = references_df.assign(_ref_row=np.arange(1, len(references_df) + 1))
    merged = align(preds, refs, ["prediction", "_row"], ["answers", "_ref_row"], pred_name=pred_name, ref_name=ref_name)
    out = []
    for qid, pred, prow, answers, rrow in zip(
        merged["id"], merged["prediction"], merged["_row"], merged["answers"], merged["_ref_row"]
    ):
        p = _prediction_cell(pred, f"{pred_name}: row {prow} (id {qid!r})")
        a = _answers_cell(answers, f"{ref_name}: row {rrow} (id {qid!r})")
        out.append((qid, p, a, int(rrow)))
    return out


def vqa_accuracy_per_item(
    predictions_df: pd.DataFrame, references_df: pd.DataFrame, stem: bool = False, vqa_eval: str = DEFAULT_VQA_EVAL,
    *, pred_name: str = "predictions", ref_name: str = "references",
) -> np.ndarray:
    """Per-question accuracy (in [0, 1]) aligned to the order of ``predictions_df``. A null prediction, an
    ``answers`` cell that is not a list of strings, or an empty one stops with the file (``pred_name`` /
    ``ref_name``), the row and the problem. A question with other than 10 answers is scored as the reference code
    scores it (the mean over its answers' leave-one-out subsets); `score_vqa` reports such rows."""
    rows = _checked_rows(predictions_df, references_df, pred_name, ref_name)
    return np.array([vqa_accuracy(p, a, stem=stem, vqa_eval=vqa_eval) for _, p, a, _ in rows], dtype=float)


def answer_count_report(predictions_df, references_df, *, pred_name="predictions", ref_name="references") -> dict | None:
    """None when every scored question has 10 answers; else how many do not, their counts and the first rows."""
    rows = _checked_rows(predictions_df, references_df, pred_name, ref_name)
    off = [(qid, len(a), r) for qid, _, a, r in rows if len(a) != EXPECTED_ANSWERS]
    if not off:
        return None
    counts: dict[str, int] = {}
    for _, n, _ in off:
        counts[str(n)] = counts.get(str(n), 0) + 1
    return {
        "expected": EXPECTED_ANSWERS,
        "n_questions": len(off),
        "answer_counts": dict(sorted(counts.items(), key=lambda kv: int(kv[0]))),
        "first": [{"id": str(q), "row": r, "answers": n} for q, n, r in off[:5]],
        "scored_as": "the reference code: mean over the question's answers of min(1, matches among the others / 3)",
    }


def vqa_settings(*, stem: bool, n_resamples: int, seed: int, vqa_eval: str = DEFAULT_VQA_EVAL) -> dict:
    variant = get_vqa_eval(vqa_eval)
    return {
        "eval": variant.name,
        "eval_ref": VQA_EVAL_REVISIONS[variant.name],
        "punct": "".join(PUNCTUATION),
        "gt_norm": variant.gt_norm,
        "pred_norm": variant.pred_norm,
        "acc": "mean-leave-one-out-min1-m/3",
        "stem": _stem_arg(stem) or "no",
        **({"stem_ref": STEM_REFERENCE} if _stem_arg(stem) else {}),
        "scale": 100,
        "round": 2,
        **ci_settings(n_resamples, seed),
        "version": f"leverplus-{package_version('leverplus')}",
    }


def score_vqa(
    predictions: pd.DataFrame,
    references: pd.DataFrame,
    *,
    stem: bool = False,
    vqa_eval: str = DEFAULT_VQA_EVAL,
    n_resamples: int = 1000,
    seed: int = 0,
    pred_name: str = "predictions",
    ref_name: str = "references",
) -> dict:
    """VQA accuracy x100 (2 decimals) under ``vqa_eval`` with n, a seeded bootstrap 95% CI and a signature.
    Input problems stop naming ``pred_name``/``ref_name`` (the files), the row and the problem; questions without
    exactly 10 answers are scored as the reference scores them and listed under ``answer_count_warning``."""
    settings = vqa_settings(stem=stem, n_resamples=n_resamples, seed=seed, vqa_eval=vqa_eval)
    names = {"pred_name": pred_name, "ref_name": ref_name}
    per_item = vqa_accuracy_per_item(predictions, references, stem=stem, vqa_eval=vqa_eval, **names)
    n = int(per_item.size)
    score = round(100 * float(sum(per_item.tolist())) / n, 2)
    lo, hi = stats.bootstrap_ci(per_item, n_resamples=n_resamples, seed=seed)
    out = {
        "metric": "vqa_accuracy",
        "score": score,
        "n": n,
        "ci95": [round(100 * lo, 2), round(100 * hi, 2)],
        "signature": make_signature("vqa_accuracy", settings),
        "settings": settings,
    }
    report = answer_count_report(predictions, references, **names)
    if report is not None:
        out["answer_count_warning"] = report
    return out


__all__ = [
    "normalize_answer",
    "process_punctuation",
    "process_digit_article",
    "okvqa_stem",
    "stem_mode",
    "STEM_MODES",
    "vqa_accuracy",
    "vqa_accuracy_per_item",
    "score_vqa",
    "vqa_settings",
    "scoring_from_settings",
    "get_vqa_eval",
    "VQA_EVALS",
    "VQA_EVAL_REVISIONS",
    "DEFAULT_VQA_EVAL",
    "MetricsInputError",
]
