"""The consistency demo's generated corpus: queries and documents in Chinese, English, mixed Chinese-English and code
(the source document's test scenarios), over topics, with relevance = same topic.

    corpus.json = {"queries": [{id, text, lang, topic}], "documents": [{id, text, lang, topic}],
                   "qrels": {query_id: [document_id, …]}, "rerank": [{query_id, candidates: [document_id, …]}],
                   "meta": {…}}

`rerank` lists, per query, its relevant documents plus `n_negatives` others (seeded), shuffled: the pairs the
reranker scores. The same generator, with another seed, makes the demo models' training pairs
(`leverplus.tracks.consistency.assets`).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

# (english phrase, chinese phrase, code snippet) per topic
TOPICS = [
    ("sort a list", "列表排序", "sorted(items, key=len)"),
    ("read a file", "读取文件", "open(path).read()"),
    ("parse json", "解析 JSON", "json.loads(text)"),
    ("reverse a string", "反转字符串", "text[::-1]"),
    ("merge two dicts", "合并字典", "{**a, **b}"),
    ("count words", "统计词频", "Counter(words)"),
    ("send an http request", "发送网络请求", "requests.get(url)"),
    ("make a directory", "创建目录", "os.makedirs(path)"),
    ("random number", "随机数", "random.randint(1, 6)"),
    ("current time", "当前时间", "time.time()"),
    ("square root", "平方根", "math.sqrt(x)"),
    ("remove duplicates", "去除重复", "list(set(items))"),
    ("join strings", "拼接字符串", "', '.join(parts)"),
    ("split a sentence", "分割句子", "line.split()"),
    ("upper case", "转成大写", "name.upper()"),
    ("list length", "列表长度", "len(items)"),
    ("sum numbers", "数字求和", "sum(values)"),
    ("find maximum", "求最大值", "max(values)"),
    ("regular expression", "正则表达式", "re.findall(pattern, s)"),
    ("write csv", "写入表格", "csv.writer(f).writerow(row)"),
    ("sleep a second", "暂停一秒", "time.sleep(1)"),
    ("copy a file", "复制文件", "shutil.copy(src, dst)"),
    ("matrix multiply", "矩阵乘法", "a @ b"),
    ("format a date", "格式化日期", "d.strftime('%Y-%m-%d')"),
]
LANGS = ("en", "zh", "mixed", "code")

QUERY_TEMPLATES = {
    "en": ["how do I {en} in python", "what is the way to {en}", "{en} example", "best method to {en}"],
    "zh": ["怎么{zh}", "如何{zh}", "{zh}的方法", "请问{zh}用什么函数"],
    "mixed": ["Python 里怎么 {en}", "{zh} in python", "如何 {en}", "{zh} 的 example"],
    "code": ["what does `{code}` do", "explain {code}", "{code} meaning", "example of {code}"],
}
DOC_TEMPLATES = {
    "en": ["To {en}, call {code}. It is the usual way.", "You can {en} with one line: {code}.",
           "The standard answer for how to {en} is {code}."],
    "zh": ["要{zh}，可以使用 {code}。", "{zh}最简单的写法是 {code}。", "关于{zh}：直接调用 {code} 即可。"],
    "mixed": ["{zh} (how to {en}): use {code}.", "在 Python 中 {en}，写 {code} 就行。", "{en} 即 {zh}，代码 {code}。"],
    "code": ["# {en}\nresult = {code}", "def f():\n    # {zh}\n    return {code}", "# {zh} / {en}\nprint({code})"],
}


def _fill(template: str, topic) -> str:
    en, zh, code = topic
    return template.format(en=en, zh=zh, code=code)


def generate_pairs(n: int, seed: int) -> list[tuple[str, str, int]]:
    """`n` (query, relevant document, topic) triples, seeded (the demo models' training data)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = rng.randrange(len(TOPICS))
        q = _fill(rng.choice(QUERY_TEMPLATES[rng.choice(LANGS)]), TOPICS[t])
        d = _fill(rng.choice(DOC_TEMPLATES[rng.choice(LANGS)]), TOPICS[t])
        out.append((q, d, t))
    return out


def generate_corpus(*, seed: int = 0, queries_per_topic: int = 2, n_negatives: int = 6,
                    n_topics: int | None = None) -> dict:
    rng = random.Random(seed)
    topics = TOPICS[: n_topics or len(TOPICS)]
    queries, documents, qrels = [], [], {}
    for t, topic in enumerate(topics):
        for lang in LANGS:
            documents.append({"id": f"d{len(documents):04d}", "lang": lang, "topic": t,
                              "text": _fill(rng.choice(DOC_TEMPLATES[lang]), topic)})
        for _ in range(queries_per_topic):
            lang = LANGS[len(queries) % len(LANGS)]
            queries.append({"id": f"q{len(queries):04d}", "lang": lang, "topic": t,
                            "text": _fill(rng.choice(QUERY_TEMPLATES[lang]), topic)})
    for q in queries:
        qrels[q["id"]] = [d["id"] for d in documents if d["topic"] == q["topic"]]
    rerank = []
    for q in queries:
        others = [d["id"] for d in documents if d["topic"] != q["topic"]]
        cands = qrels[q["id"]] + rng.sample(others, min(n_negatives, len(others)))
        rng.shuffle(cands)
        rerank.append({"query_id": q["id"], "candidates": cands})
    return {
        "queries": queries, "documents": documents, "qrels": qrels, "rerank": rerank,
        "meta": {"source": "demo", "seed": seed, "queries_per_topic": queries_per_topic, "n_negatives": n_negatives,
                 "n_topics": len(topics), "langs": list(LANGS)},
    }


def validate_corpus(corpus: dict, path: str = "corpus") -> dict:
    """Stop with a message naming `path` and the problem for a malformed corpus."""
    for key in ("queries", "documents", "rerank"):
        if not isinstance(corpus.get(key), list) or not corpus[key]:
            raise ValueError(f"{path}: `{key}` must be a non-empty list")
    ids = set()
    for kind in ("queries", "documents"):
        for i, rec in enumerate(corpus[kind]):
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str) or not isinstance(rec.get("text"), str):
                raise ValueError(f"{path}: {kind}[{i}] needs string `id` and `text`")
            if rec["id"] in ids:
                raise ValueError(f"{path}: duplicate id {rec['id']!r}")
            ids.add(rec["id"])
    qids = {q["id"] for q in corpus["queries"]}
    dids = {d["id"] for d in corpus["documents"]}
    for i, r in enumerate(corpus["rerank"]):
        if r.get("query_id") not in qids:
            raise ValueError(f"{path}: rerank[{i}] names unknown query {r.get('query_id')!r}")
        bad = [c for c in r.get("candidates") or [] if c not in dids]
        if bad or len(r.get("candidates") or []) < 2:
            raise ValueError(f"{path}: rerank[{i}] needs ≥ 2 known candidates (unknown: {bad[:3]})")
    return corpus


def load_corpus(path: str | Path) -> dict:
    path = Path(path)
    try:
        corpus = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the corpus ({err})") from err
    return validate_corpus(corpus, str(path))
