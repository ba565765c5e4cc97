"""Offline MT demo: five language pairs, systems of graded, known quality.

Sentences are built from parallel templates (zh, th, hi, en, id) with slot fillers, so every source has a plausible
reference in the target language (English, Hindi in Devanagari with the danda, Indonesian).  The systems are
controlled corruptions of the reference, each with a per-token error rate; the injected errors are recorded, and a
simulated MQM-style human score is derived from them (minor = 1, major = 5, capped at 25, plus small noise), so the
"true" ordering of the systems is known by construction:

    sys_a (2 %) > sys_b (8 %) > sys_c (16 %) > sys_d (28 %) > sys_e (45 %)

Corruptions: token drops, adjacent swaps, substitutions (another filler of the same language), truncation of the
tail, and untranslated spans (source-language tokens copied in).  Everything is seeded: same seed, same files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PAIRS = ("zh-en", "th-en", "en-hi", "hi-en", "en-id")
LANGS = ("en", "zh", "th", "hi", "id")

# slot fillers, parallel across languages (index i means the same thing everywhere)
SUBJ = {
    "en": ["the teacher", "my brother", "the doctor", "our neighbour", "the farmer", "the students", "the driver",
           "her mother", "the engineer", "the children", "the manager", "the old man"],
    "zh": ["老师", "我哥哥", "医生", "我们的邻居", "农民", "学生们", "司机", "她妈妈", "工程师", "孩子们", "经理", "那位老人"],
    "th": ["ครู", "พี่ชายของฉัน", "หมอ", "เพื่อนบ้านของเรา", "ชาวนา", "นักเรียน", "คนขับรถ", "แม่ของเธอ", "วิศวกร", "เด็กๆ",
           "ผู้จัดการ", "ชายชรา"],
    "hi": ["शिक्षक", "मेरा भाई", "डॉक्टर", "हमारा पड़ोसी", "किसान", "छात्र", "ड्राइवर", "उसकी माँ", "इंजीनियर", "बच्चे", "प्रबंधक",
           "बूढ़ा आदमी"],
    "id": ["guru itu", "kakak saya", "dokter itu", "tetangga kami", "petani itu", "para siswa", "sopir itu", "ibunya",
           "insinyur itu", "anak-anak", "manajer itu", "lelaki tua itu"],
}
OBJ = {
    "en": ["a new book", "fresh vegetables", "the old bicycle", "a cup of tea", "the train tickets", "a small house",
           "the morning newspaper", "some medicine", "a red umbrella", "the monthly report"],
    "zh": ["一本新书", "新鲜的蔬菜", "那辆旧自行车", "一杯茶", "火车票", "一座小房子", "早报", "一些药", "一把红伞", "月度报告"],
    "th": ["หนังสือเล่มใหม่", "ผักสด", "จักรยานคันเก่า", "ชาหนึ่งถ้วย", "ตั๋วรถไฟ", "บ้านหลังเล็ก", "หนังสือพิมพ์ตอนเช้า", "ยาบางอย่าง",
           "ร่มสีแดง", "รายงานประจำเดือน"],
    "hi": ["एक नई किताब", "ताज़ी सब्ज़ियाँ", "पुरानी साइकिल", "एक कप चाय", "रेल के टिकट", "एक छोटा घर", "सुबह का अख़बार",
           "कुछ दवाइयाँ", "एक लाल छाता", "मासिक रिपोर्ट"],
    "id": ["sebuah buku baru", "sayuran segar", "sepeda tua itu", "secangkir teh", "tiket kereta", "sebuah rumah kecil",
           "koran pagi", "beberapa obat", "sebuah payung merah", "laporan bulanan"],
}
PLACE = {
    "en": ["at the market", "in the village", "near the station", "at the hospital", "in the city", "at school",
           "by the river", "at the office"],
    "zh": ["在市场", "在村子里", "在车站附近", "在医院", "在城里", "在学校", "在河边", "在办公室"],
    "th": ["ที่ตลาด", "ในหมู่บ้าน", "ใกล้สถานี", "ที่โรงพยาบาล", "ในเมือง", "ที่โรงเรียน", "ริมแม่น้ำ", "ที่สำนักงาน"],
    "hi": ["बाज़ार में", "गाँव में", "स्टेशन के पास", "अस्पताल में", "शहर में", "स्कूल में", "नदी के किनारे", "दफ़्तर में"],
    "id": ["di pasar", "di desa", "dekat stasiun", "di rumah sakit", "di kota", "di sekolah", "di tepi sungai",
           "di kantor"],
}
TIME = {
    "en": ["yesterday", "last week", "this morning", "every Sunday", "two days ago", "last night"],
    "zh": ["昨天", "上周", "今天早上", "每个星期天", "两天前", "昨晚"],
    "th": ["เมื่อวานนี้", "สัปดาห์ที่แล้ว", "เมื่อเช้านี้", "ทุกวันอาทิตย์", "เมื่อสองวันก่อน", "เมื่อคืนนี้"],
    "hi": ["कल", "पिछले हफ़्ते", "आज सुबह", "हर रविवार", "दो दिन पहले", "कल रात"],
    "id": ["kemarin", "minggu lalu", "tadi pagi", "setiap hari Minggu", "dua hari yang lalu", "tadi malam"],
}
# verbs: (en, zh, th, hi-verb-phrase, id)
VERB = {
    "en": ["bought", "saw", "found", "sold", "wanted", "brought"],
    "zh": ["买了", "看到了", "找到了", "卖了", "想要", "带来了"],
    "th": ["ซื้อ", "เห็น", "พบ", "ขาย", "อยากได้", "นำมา"],
    "hi": ["ख़रीदा", "देखा", "पाया", "बेचा", "चाहा", "लाया"],
    "id": ["membeli", "melihat", "menemukan", "menjual", "menginginkan", "membawa"],
}
REASON = {
    "en": ["because it was cheap", "because the weather was good", "for the whole family", "before the festival"],
    "zh": ["因为很便宜", "因为天气很好", "为了全家人", "在节日之前"],
    "th": ["เพราะราคาถูก", "เพราะอากาศดี", "สำหรับทั้งครอบครัว", "ก่อนเทศกาล"],
    "hi": ["क्योंकि वह सस्ता था", "क्योंकि मौसम अच्छा था", "पूरे परिवार के लिए", "त्योहार से पहले"],
    "id": ["karena harganya murah", "karena cuacanya bagus", "untuk seluruh keluarga", "sebelum perayaan"],
}


def _sentence(lang: str, s: int, v: int, o: int, p: int, t: int, r: int | None) -> str:
    S, V, O, P, T = SUBJ[lang][s], VERB[lang][v], OBJ[lang][o], PLACE[lang][p], TIME[lang][t]  # noqa: E741 (S V O)
    R = REASON[lang][r] if r is not None else None
    if lang == "en":
        out = f"{T[0].upper() + T[1:]} {S} {V} {O} {P}"
        return out + (f" {R}." if R else ".")
    if lang == "id":
        out = f"{T[0].upper() + T[1:]} {S} {V} {O} {P}"
        return out + (f" {R}." if R else ".")
    if lang == "zh":
        return f"{S}{T}{P}{V}{O}" + (f"，{R}。" if R else "。")
    if lang == "th":
        return f"{S}{V}{O}{P}{T}" + (f" {R}" if R else "")
    if lang == "hi":  # SOV: subject time place object verb
        aux = "है" if t == 3 else "था"
        return f"{S} {T} {P} {O} {V} {aux}" + (f", {R}।" if R else "।")
    raise ValueError(lang)


SYSTEMS = {"sys_a": 0.02, "sys_b": 0.08, "sys_c": 0.16, "sys_d": 0.28, "sys_e": 0.45}
MINOR, MAJOR, CAP = 1.0, 5.0, 25.0


def _tokens(text: str, lang: str) -> list[str]:
    if lang == "zh":  # no spaces: corrupt by characters
        return list(text)
    return text.split(" ")


def _join(toks: list[str], lang: str) -> str:
    return ("" if lang == "zh" else " ").join(toks)


def corrupt(ref: str, src: str, lang: str, src_lang: str, rate: float, rng: np.random.Generator,
            vocab: list[str]) -> tuple[str, dict]:
    """One system output: the reference with errors injected at per-token ``rate``; returns (text, error counts)."""
    toks = _tokens(ref, lang)
    errs = {"drop": 0, "swap": 0, "subst": 0, "trunc": 0, "untranslated": 0}
    out: list[str] = []
    i = 0
    while i < len(toks):
        u = rng.random()
        if u < rate * 0.3:
            errs["drop"] += 1
        elif u < rate * 0.55 and i + 1 < len(toks):
            out += [toks[i + 1], toks[i]]
            errs["swap"] += 1
            i += 1
        elif u < rate:
            out.append(vocab[int(rng.integers(len(vocab)))])
            errs["subst"] += 1
        else:
            out.append(toks[i])
        i += 1
    if rng.random() < rate * 0.8 and len(out) > 3:  # truncation of the tail
        keep = max(2, int(len(out) * rng.uniform(0.5, 0.85)))
        errs["trunc"] = len(out) - keep
        out = out[:keep]
    if rng.random() < rate * 0.6 and len(out) > 2:  # untranslated span: source tokens copied in
        if src_lang in ("zh", "th"):  # unsegmented scripts: one chunk of 2-6 characters
            a = int(rng.integers(max(1, len(src) - 6)))
            span = [src[a : a + int(rng.integers(2, 7))]]
        else:
            stoks = src.split(" ")
            a = int(rng.integers(len(stoks)))
            span = stoks[a : a + int(rng.integers(1, 4))]
        at = int(rng.integers(len(out)))
        out[at : at + len(span)] = span
        errs["untranslated"] = len(span)
    return _join(out, lang), errs


def mqm_penalty(errs: dict) -> float:
    """Simulated MQM: swaps minor (1), every other error major (5), truncation 5 per 3 lost tokens; capped at 25."""
    pen = MINOR * errs["swap"] + MAJOR * (errs["drop"] + errs["subst"]) + MAJOR * np.ceil(errs["trunc"] / 3)
    pen += MAJOR * (errs["untranslated"] > 0)
    return float(min(CAP, pen))


def generate_pair(pair: str, n_segments: int, seed: int) -> pd.DataFrame:
    """Long table of one language pair: one row per segment x system (id, src, refs, system, hyp, human, errors)."""
    if pair not in PAIRS:
        raise ValueError(f"the MT demo has no language pair {pair!r}; demo pairs: {', '.join(PAIRS)} (real pairs come "
                         f"from files: config/mt_wmt.yaml)")
    src_lang, tgt_lang = pair.split("-")
    rng = np.random.default_rng([seed, PAIRS.index(pair)])
    vocab_words = sorted({w for group in (SUBJ, OBJ, PLACE, TIME, VERB) for w in " ".join(group[tgt_lang]).split(" ")})
    vocab = sorted(set("".join(vocab_words))) if tgt_lang == "zh" else vocab_words
    seen: set[tuple] = set()
    rows = []
    while len(seen) < n_segments:
        slots = (int(rng.integers(12)), int(rng.integers(6)), int(rng.integers(10)), int(rng.integers(8)),
                 int(rng.integers(6)), int(rng.integers(5)))
        if slots in seen:
            continue
        seen.add(slots)
        s, v, o, p, t, r = slots
        r_ = None if r == 4 else r
        src = _sentence(src_lang, s, v, o, p, t, r_)
        ref = _sentence(tgt_lang, s, v, o, p, t, r_)
        seg = f"{pair}-{len(seen):04d}"
        for system, rate in SYSTEMS.items():
            hyp, errs = corrupt(ref, src, tgt_lang, src_lang, rate, rng, vocab)
            human = -mqm_penalty(errs) + float(rng.normal(0, 0.5))
            rows.append({"id": seg, "src": src, "refs": [ref], "system": system, "hyp": hyp,
                         "human": round(human, 3), **{f"err_{k}": v for k, v in errs.items()}})
    return pd.DataFrame(rows)


def true_order() -> list[str]:
    """Systems best first (by construction)."""
    return sorted(SYSTEMS, key=SYSTEMS.get)
