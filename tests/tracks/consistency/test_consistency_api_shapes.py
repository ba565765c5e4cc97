"""Rerank request shapes (issue 26): what vLLM, Jina and Cohere v2 send, accepted by the project's server; the
client's `rerank_protocol` and `rerank_format` (raw | qwen3_template); scores that are not finite JSON numbers or not
probabilities stop the run.

Checked against: vLLM `vllm/entrypoints/pooling/score/{protocol,api_router,serving,utils}.py` (commits 08a48e2b,
7e4cd770, 59b1164e, 7fbd19b8) and `pooling/scoring/protocol.py` (53158688): routes /rerank, /v1/rerank,
/v2/rerank, /score, /v1/score; `top_n` default 0 = all; documents strings or `{"content": [...]}`; results carry
`document: {text}`; score requests `text_1`/`text_2` (also `queries`/`documents`, `queries`/`items`,
`data_1`/`data_2`), 1:N or N:N; an LLM reranker without a score template scores `tokenizer(query + document)`."""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from leverplus.api import APIConfig, APIError, OpenAICompatClient
from leverplus.tracks.consistency.demo import generate_corpus
from leverplus.metrics.agreement import RerankRun, rerank_agreement
from leverplus.tracks.consistency.assets import ASSETS, EMBEDDER, RERANKER
from leverplus.tracks.consistency.reranker import PREFIX, SUFFIX, QwenReranker, RerankRecipe, document_template, query_template
from leverplus.serving.embedding_backend import make_embedding_backend, make_rerank_backend
from leverplus.serving.server import OpenAICompatServer
from leverplus.tracks.consistency.stages import (api_side, check_probabilities, embedding_recipe, rerank_as_sent, rerank_recipe,
                                          run_local)

from test_consistency_agreement import EMB_CFG, RR_CFG, api_cfg

EMB, RR = ASSETS / EMBEDDER, ASSETS / RERANKER
DOCS = ["To sort a list, call sorted(items, key=len).", "要读取文件，可以使用 open(path).read()。", "x"]


@pytest.fixture(scope="module")
def server():
    rb = make_rerank_backend(str(RR), model_name="r", options={})
    eb = make_embedding_backend(str(EMB), model_name="e", options={})
    with OpenAICompatServer(port=0, rerank=rb, embeddings=eb) as srv:
        srv.rb, srv.eb = rb, eb
        yield srv


def post(srv, path, body, raw: bytes | None = None, headers=None):
    import httpx

    url = srv.url.rsplit("/v1", 1)[0] + path
    if raw is not None:
        return httpx.post(url, content=raw, headers=headers or {})
    return httpx.post(url, json=body)


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v2/rerank"])
def test_rerank_routes_accept_strings_text_objects_and_top_n_zero(server, path):
    expected = server.rb.score("how to sort", DOCS, None)
    for docs in (DOCS, [{"text": d} for d in DOCS], {"content": [{"type": "text", "text": d} for d in DOCS]}):
        r = post(server, path, {"model": "r", "query": "how to sort", "documents": docs, "top_n": 0})
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        assert len(res) == 3 and [x["index"] for x in res] == sorted(range(3), key=lambda i: -expected[i])
        assert all(x["document"]["text"] == DOCS[x["index"]] for x in res)  # vLLM/Jina default: documents back
    r = post(server, path, {"model": "r", "query": "how to sort", "documents": DOCS, "top_n": 2,
                            "return_documents": False})
    assert [set(x) for x in r.json()["results"]] == [{"index", "relevance_score"}] * 2
    assert post(server, path, {"model": "r", "query": "q", "documents": DOCS, "top_n": -1}).status_code == 400
    assert post(server, path, {"model": "r", "query": "q", "documents": [{"txt": "a"}]}).status_code == 400


def test_usage_counts_model_tokens(server):
    r = post(server, "/v1/rerank", {"model": "r", "query": "how to sort", "documents": DOCS})
    reranker = server.rb.reranker
    want = sum(map(len, reranker.pair_ids("how to sort", DOCS)))
    assert r.json()["usage"]["total_tokens"] == want != sum(len(d.split()) for d in DOCS) + 3
    e = post(server, "/v1/embeddings", {"model": "e", "input": ["一只狐狸 jumps", "x"]})
    assert e.json()["usage"]["prompt_tokens"] == server.eb.count_tokens(["一只狐狸 jumps", "x"])


@pytest.mark.parametrize("path", ["/v1/score", "/score"])
def test_score_route_vllm_shapes(server, path):
    one_n = server.rb.score("how to sort", DOCS, None)
    for a, b in (("text_1", "text_2"), ("queries", "documents"), ("queries", "items"), ("data_1", "data_2")):
        r = post(server, path, {"model": "r", a: "how to sort", b: DOCS})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert [x["index"] for x in data] == [0, 1, 2] and [x["object"] for x in data] == ["score"] * 3
        assert np.allclose([x["score"] for x in data], one_n, atol=1e-6)
    n_n = post(server, path, {"model": "r", "text_1": ["how to sort", "read a file"], "text_2": DOCS[:2]}).json()["data"]
    assert n_n[1]["score"] == pytest.approx(server.rb.score("read a file", DOCS[1:2], None)[0], abs=1e-6)
    assert post(server, path, {"model": "r", "text_1": ["a", "b"], "text_2": DOCS}).status_code == 400


def test_chunked_body_is_read(server):
    body = json.dumps({"model": "r", "query": "how to sort", "documents": DOCS}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 17]), body[i:i + 17]) for i in range(0, len(body), 17))
    host, port = server.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert len(json.loads(reply.split(b"\r\n\r\n", 1)[1])["results"]) == 3


@pytest.mark.parametrize("protocol, path, fields", [
    ("jina", "/v1/rerank", {"model", "query", "documents", "top_n", "return_documents"}),
    ("cohere_v2", "/v1/rerank", {"model", "query", "documents", "top_n"}),
    ("vllm_score", "/v1/score", {"model", "text_1", "text_2"}),
])
def test_client_request_shapes(server, protocol, path, fields):
    client = OpenAICompatClient(APIConfig(base_url=server.url, model="r"))
    got = client.rerank("how to sort", DOCS, protocol=protocol)
    assert np.allclose(got, server.rb.score("how to sort", DOCS, None), atol=1e-6)
    body = server.requests_for(path)[-1].body
    assert set(body) == fields
    if protocol == "jina":
        assert body["return_documents"] is False and body["top_n"] == 3


@pytest.mark.parametrize("bad", ["0.5", True, float("nan"), float("inf"), None])
def test_client_rejects_scores_that_are_not_finite_numbers(monkeypatch, bad):
    client = OpenAICompatClient(APIConfig(base_url="http://127.0.0.1:9/v1", model="r", max_retries=0))
    monkeypatch.setattr(client, "_post_json", lambda path, body: {
        "results": [{"index": 0, "relevance_score": 0.2}, {"index": 1, "relevance_score": bad}]})
    with pytest.raises(APIError, match="finite JSON number"):
        client.rerank("q", ["a", "b"])


def test_scores_outside_zero_one_stop_the_run_naming_the_query():
    check_probabilities([np.array([0.1, 1.0]), np.array([0.0])], ["q0", "q1"], "API")
    for bad in (1.7, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"query 'q1'.*not probabilities"):
            check_probabilities([np.array([0.1]), np.array([0.2, bad])], ["q0", "q1"], "API")


def test_qwen3_template_strings_concatenate_to_the_official_prompt():
    rr = QwenReranker(RR)
    rec = RerankRecipe()
    q, d = query_template("how to sort", rec), document_template(DOCS[0])
    assert q + d == PREFIX + f"<Instruct>: {rec.instruction}\n<Query>: how to sort\n<Document>: {DOCS[0]}" + SUFFIX
    raw = rr.with_recipe(rec.with_(template=False))
    assert raw.pair_ids(q, [d]) == rr.pair_ids("how to sort", [DOCS[0]])
    assert raw.pair_ids("q", ["d"]) == [rr.tokenizer("qd")["input_ids"]]
    sent_q, sent_d, instr = rerank_as_sent("how to sort", DOCS, RR_CFG, {"rerank_format": "qwen3_template"})
    assert instr is None and sent_q.startswith(PREFIX) and all(x.endswith(SUFFIX) for x in sent_d)
    assert rerank_as_sent("q", ["d"], RR_CFG, {"rerank_format": "raw"}) == ("q", ["d"], RR_CFG["instruction"])


def test_vllm_like_server_needs_the_client_template():
    """A server that applies no template (vLLM): raw requests score the bare strings (far from the local recipe);
    `rerank_format: qwen3_template` reproduces the local scores."""
    corpus = generate_corpus(seed=0, queries_per_topic=1, n_negatives=3, n_topics=3)
    _, probs, logits, *_ = run_local(corpus, EMB, RR, embedding_recipe(EMB_CFG), rerank_recipe(RR_CFG))
    local = RerankRun(probs, logits)
    out = {}
    for fmt in ("raw", "qwen3_template"):
        for protocol in ("jina", "vllm_score"):
            api = {**api_cfg(rerank={"template": False}), "rerank_format": fmt, "rerank_protocol": protocol}
            _, api_probs, stats = api_side(corpus, api, EMB_CFG, RR_CFG, emb_dir=EMB, rr_dir=RR)
            assert stats["rerank_format"] == fmt and stats["rerank_protocol"] == protocol
            out[fmt, protocol] = rerank_agreement(local, RerankRun(api_probs), n_resamples=100)
    for protocol in ("jina", "vllm_score"):
        assert out["qwen3_template", protocol]["absolute"]["max_abs_diff_prob"]["value"] < 1e-5
        assert out["raw", protocol]["absolute"]["mean_abs_diff_prob"]["value"] > 0.05
