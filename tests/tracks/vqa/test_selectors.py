"""ICD selectors (v0, v1, v2, v2_lora): learning, batch independence, persistence, determinism, LoRA setup, and
that training uses the beam-search pool.

Synthetic task: train examples form clusters in image-feature space (text features are noise).  Every anchor's
pool holds two members of its own cluster and a few members of other clusters; the beam search "picked" the pool
members nearest the anchor's image feature, in order.  A val query is a fresh member of some cluster whose pool
holds exactly one member of its cluster; the gold is the pool member nearest the query's image feature.  Chance
of picking it first is 1/|pool| ≈ 0.1.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from leverplus.tracks.vqa.icd.features import Features
from leverplus.tracks.vqa.icd.selector_training import build_sequences, epoch_order
from leverplus.tracks.vqa.icd.selectors import SELECTORS, config_for, load_selector, train_selector
from leverplus.tracks.vqa.icd.selectors.common import FeatureSource, make_batch
from leverplus.tracks.vqa.icd.selectors.v2_lora import ClipEncoder

torch.set_num_threads(1)

FROZEN = ["v0", "v1", "v2"]
FAST_CFG = {"epochs": 6, "d_model": 32, "batch_size": 32, "lr": 3e-3, "beam_ranks": 1, "dropout": 0.0}


def _norm(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Task:
    """Cluster structure shared by the feature-level task and the image-level (v2_lora) task."""

    def __init__(self, n_clusters: int, members: int, n_val: int, pool: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.n_train = n_clusters * members
        self.cluster = np.repeat(np.arange(n_clusters), members)
        self.val_cluster = self.rng.integers(0, n_clusters, n_val)
        self.pool = pool

    def make_pool(self, c: int, exclude: int, n_near: int) -> np.ndarray:
        same = [i for i in np.flatnonzero(self.cluster == c) if i != exclude]
        near = self.rng.choice(same, n_near, replace=False)
        far = self.rng.choice(np.flatnonzero(self.cluster != c), int(self.rng.integers(self.pool - 4, self.pool + 1)),
                              replace=False)
        cand = np.concatenate([near, far])
        self.rng.shuffle(cand)
        return cand

    def beams_and_pools(self, train_image: np.ndarray, beams: int):
        beam_rows, pool_rows = [], []
        for a in range(self.n_train):
            cand = self.make_pool(self.cluster[a], a, n_near=2)
            order = cand[np.argsort(-(train_image[cand] @ train_image[a]), kind="stable")]
            pool_rows.append({"anchor": f"t{a}", "candidates": [f"t{c}" for c in cand]})
            for r in range(beams):
                picked = [f"t{order[0]}", f"t{order[1 + r]}"]
                beam_rows.append({"anchor": f"t{a}", "beam_rank": r, "picked": picked, "icd_ids": picked[::-1],
                                  "step_scores": [0.2, 0.1], "score": 0.5})
        return pd.DataFrame(beam_rows), pd.DataFrame(pool_rows)

    def val_pools(self, train_image: np.ndarray, val_image: np.ndarray):
        pools, gold = [], []
        for q, c in enumerate(self.val_cluster):
            cand = self.make_pool(c, -1, n_near=1)
            pools.append([f"t{i}" for i in cand])
            gold.append(f"t{cand[np.argmax(train_image[cand] @ val_image[q])]}")
        return pools, gold


def feature_task(n_clusters=100, members=6, n_val=200, dim=8, pool=10, beams=2, seed=0, noise=0.3):
    task = Task(n_clusters, members, n_val, pool, seed)
    rng = task.rng
    centres = _norm(rng.normal(size=(n_clusters, dim)))

    def member(c):
        return _norm(centres[c] + noise * rng.normal(size=(len(c), dim)) / np.sqrt(dim))

    train = Features([f"t{i}" for i in range(task.n_train)], member(task.cluster),
                     _norm(rng.normal(size=(task.n_train, dim))))
    val = Features([f"v{i}" for i in range(n_val)], member(task.val_cluster), _norm(rng.normal(size=(n_val, dim))))
    beam, pools = task.beams_and_pools(train.image, beams)
    val_pools, gold = task.val_pools(train.image, val.image)
    return dict(train=train, val=val, beam=beam, pools=pools, val_pools=val_pools, gold=gold)


def hit_rate(selections, gold) -> float:
    return float(np.mean([s[0] == g for s, g in zip(selections, gold)]))


def chance(pools) -> float:
    return float(np.mean([1 / len(p) for p in pools]))


@pytest.fixture(scope="module")
def data():
    return feature_task()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = {}
    for version in FROZEN:
        d = tmp_path_factory.mktemp(version)
        stats = train_selector(version, beam=data["beam"], pools=data["pools"], train_features=data["train"],
                               cfg=FAST_CFG, out_dir=d, seed=0)
        out[version] = (d, stats)
    return out


# ---- (1) learning ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", FROZEN)
def test_learns_to_pick_nearest_image(version, data, trained):
    out_dir, stats = trained[version]
    assert stats["loss_per_epoch"][-1] < 0.5 * stats["loss_per_epoch"][0]
    sel = load_selector(out_dir)
    picks = sel.select(data["val"], data["val_pools"], data["train"], shot=2)
    for p, pool in zip(picks, data["val_pools"]):
        assert len(p) == 2 and len(set(p)) == 2 and set(p) <= set(pool)
    assert chance(data["val_pools"]) < 0.15
    assert hit_rate(picks, data["gold"]) >= 0.8


# ---- (2) batch independence --------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", FROZEN)
def test_selection_independent_of_batching(version, data, trained):
    sel = load_selector(trained[version][0])
    val, pools = data["val"], data["val_pools"]
    n = 60  # pools have different sizes, so batches are padded differently
    q = Features(val.ids[:n], val.image[:n], val.text[:n])
    ref = sel.select(q, pools[:n], data["train"], shot=3, batch_size=n)
    assert sel.select(q, pools[:n], data["train"], shot=3, batch_size=1) == ref
    assert sel.select(q, pools[:n], data["train"], shot=3, batch_size=7) == ref
    perm = np.random.default_rng(1).permutation(n)
    shuffled = Features([q.ids[i] for i in perm], q.image[perm], q.text[perm])
    got = sel.select(shuffled, [pools[i] for i in perm], data["train"], shot=3, batch_size=7)
    assert got == [ref[i] for i in perm]


@pytest.mark.parametrize("version", FROZEN)
def test_only_own_earlier_choices_are_masked(version, data, trained):
    """The original v0 masked ICDs chosen by any query of a batch for every query.  Take two queries A, B with the
    same pool where, selected alone, A's first ICD is one that B picks later; in one batch B must still get it."""
    sel = load_selector(trained[version][0])
    val, train = data["val"], data["train"]
    pool = data["val_pools"][0]
    alone = sel.select(val, [pool] * len(val.ids), train, shot=3, batch_size=1)
    pair = next(((a, b) for a in range(len(alone)) for b in range(len(alone))
                 if alone[a][0] != alone[b][0] and alone[a][0] in alone[b][1:]), None)
    assert pair is not None
    a, b = pair
    both = Features([val.ids[a], val.ids[b]], val.image[[a, b]], val.text[[a, b]])
    assert sel.select(both, [pool, pool], train, shot=3, batch_size=2) == [alone[a], alone[b]]


# ---- (3) persistence ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", FROZEN)
def test_save_load_roundtrip(version, data, trained, tmp_path):
    out_dir, _ = trained[version]
    sel = load_selector(out_dir)
    saved = load_file(str(out_dir / "model.safetensors"))
    params = dict(sel.named_parameters())
    assert set(saved) == set(params)
    assert all(torch.equal(saved[k], params[k].detach()) for k in saved)
    sel.save(tmp_path)
    again = load_selector(tmp_path)
    q = Features(data["val"].ids[:40], data["val"].image[:40], data["val"].text[:40])
    assert again.select(q, data["val_pools"][:40], data["train"], shot=2) == \
        sel.select(q, data["val_pools"][:40], data["train"], shot=2)
    fresh = SELECTORS[version](config_for(version, FAST_CFG), sel.feat_dim, **sel.init_kwargs())
    assert not all(torch.equal(saved[k], p.detach()) for k, p in fresh.named_parameters() if k in saved)


# ---- (4) determinism ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", FROZEN)
def test_same_seed_bit_identical_weights(version, tmp_path):
    small = feature_task(n_clusters=20, members=4, n_val=4, seed=3)
    cfg = {**FAST_CFG, "epochs": 2, "batch_size": 16, "dropout": 0.1}  # dropout on: its RNG is seeded too

    def run(seed, name):
        beam = small["beam"].sample(frac=1.0, random_state=seed + 7)  # row order must not matter
        train_selector(version, beam=beam, pools=small["pools"], train_features=small["train"], cfg=cfg,
                       out_dir=tmp_path / name, seed=seed)
        return load_file(str(tmp_path / name / "model.safetensors"))

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# ---- (6) training pool = beam pool -------------------------------------------------------------------------------
def test_training_sequences_use_the_beam_pool(data):
    src = FeatureSource.from_features(data["train"])
    seqs = build_sequences(data["beam"], data["pools"], src, beam_ranks=2)
    pools = dict(zip(data["pools"]["anchor"], data["pools"]["candidates"]))
    assert len(seqs) == len(data["beam"])
    for anchor, rows, targets in zip(seqs.anchors, seqs.pool_rows, seqs.targets):
        pool = [src.ids[r] for r in rows]
        assert pool == list(pools[anchor])  # the whole pool, not the two gold ICDs
        assert len(pool) > len(targets)
    # the targets are the beam's picks, in pick order
    first = data["beam"].sort_values(["anchor", "beam_rank"]).iloc[0]
    assert [src.ids[seqs.pool_rows[0][t]] for t in seqs.targets[0]] == list(first["picked"])


def test_epoch_order_by_anchor_keeps_each_anchors_beams_together(data):
    """batch_by: anchor — every sequence once per epoch, an anchor's beams consecutive (in beam-rank order), the
    anchors' order drawn by the seed and independent of the beam table's row order; batch_by: sequence is the plain
    permutation (Lever-LM's shuffled loader)."""
    src = FeatureSource.from_features(data["train"])
    seqs = build_sequences(data["beam"], data["pools"], src, beam_ranks=2)
    assert len(set(seqs.anchors)) > 3 and len(seqs) > len(set(seqs.anchors))
    order = epoch_order(seqs, torch.Generator().manual_seed(0), "anchor")
    assert sorted(order) == list(range(len(seqs)))
    runs = [seqs.anchors[i] for k, i in enumerate(order) if k == 0 or seqs.anchors[order[k - 1]] != seqs.anchors[i]]
    assert len(runs) == len(set(seqs.anchors))  # each anchor appears as one consecutive run
    assert all(seqs.beam_ranks[a] < seqs.beam_ranks[b] for a, b in zip(order, order[1:])
               if seqs.anchors[a] == seqs.anchors[b])
    assert epoch_order(seqs, torch.Generator().manual_seed(1), "anchor") != order  # the seed draws the order
    shuffled = build_sequences(data["beam"].sample(frac=1.0, random_state=3), data["pools"], src, beam_ranks=2)
    assert [shuffled.anchors[i] for i in epoch_order(shuffled, torch.Generator().manual_seed(0), "anchor")] == [
        seqs.anchors[i] for i in order]
    assert epoch_order(seqs, torch.Generator().manual_seed(0), "sequence") == torch.randperm(
        len(seqs), generator=torch.Generator().manual_seed(0)).tolist()
    with pytest.raises(ValueError, match="batch_by"):
        epoch_order(seqs, torch.Generator().manual_seed(0), "query")


def test_inconsistent_beam_and_pool_rejected(data):
    src = FeatureSource.from_features(data["train"])
    beam = data["beam"].copy()
    beam.at[0, "picked"] = ["t0", beam.at[0, "picked"][1]]  # t0 is the anchor's own id, never in its pool
    with pytest.raises(ValueError, match="outside the anchor's pool"):
        build_sequences(beam, data["pools"], src, beam_ranks=2)


@pytest.mark.parametrize("version", FROZEN)
def test_loss_involves_every_pool_candidate(version, data):
    """Gradient of the training loss reaches every candidate of the beam pool (negatives included) and no train
    example outside it."""
    torch.manual_seed(0)
    cfg = config_for(version, {"d_model": 16, "dropout": 0.0})
    model, src = SELECTORS[version].for_training(cfg, data["train"])
    seqs = build_sequences(data["beam"].iloc[:4], data["pools"], src, beam_ranks=2)
    src.matrix.requires_grad_(True)
    batch = make_batch(seqs.query_rows, seqs.pool_rows, seqs.targets)
    model.sequence_loss(batch, src, src).backward()
    touched = set(np.flatnonzero(src.matrix.grad.abs().sum(1).numpy() > 0))
    expected = set(seqs.query_rows) | {r for rows in seqs.pool_rows for r in rows}
    assert touched == expected
    assert len(expected) > len(seqs.query_rows) + 2 * len(set(seqs.anchors))


def test_config_keys():
    assert config_for("v2", {"cross_attn_layers": 2})["cross_attn_layers"] == 2
    assert config_for("v1", {"lora": {"r": 8}})["d_model"] == 128  # other versions' keys are ignored
    assert config_for("v2_lora", {"lora": {"r": 8}})["lora"]["alpha"] == 32
    with pytest.raises(ValueError, match="unknown"):
        config_for("v1", {"epoch": 3})
    for cls in SELECTORS.values():
        assert {"epochs", "batch_size", "lr", "d_model", "beam_ranks"} <= set(cls.DEFAULTS)


# ---- v2_lora on a tiny CLIP ----------------------------------------------------------------------------------------
def build_tiny_clip(out_dir, words, image_size=32, seed=0):
    """A random-init CLIP directory: CLIPModel weights, a word-level fast tokenizer, the PIL image processor."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[(t, vocab[t]) for t in ("<|startoftext|>", "<|endoftext|>")])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                            pad_token="<pad>", unk_token="<unk>").save_pretrained(out_dir)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<pad>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(cfg)
    with torch.no_grad():  # the default 0.02-std init maps all images to nearly the same direction (cos ≈ 0.99)
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 2.0 / p[0].numel() ** 0.5)
    model.save_pretrained(out_dir)
    CLIPImageProcessorPil(size={"shortest_edge": image_size},
                          crop_size={"height": image_size, "width": image_size}).save_pretrained(out_dir)


@pytest.fixture(scope="module")
def image_task(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("clip_task")
    words = "what colour is the shape on left right top bottom of this picture".split()
    build_tiny_clip(root / "clip", words)
    task = Task(n_clusters=30, members=4, n_val=40, pool=8, seed=5)
    rng = task.rng
    bases = rng.integers(0, 256, size=(30, 4, 4, 3))

    def table(prefix, clusters):
        rows = []
        for i, c in enumerate(clusters):
            grid = np.clip(bases[c] + rng.normal(0, 12, size=bases[c].shape), 0, 255).astype(np.uint8)
            path = root / f"{prefix}{i}.png"
            Image.fromarray(grid).resize((40, 40), Image.NEAREST).save(path)
            rows.append({"id": f"{prefix}{i}", "image": str(path),
                         "question": " ".join(rng.choice(words, int(rng.integers(3, 7))))})
        return pd.DataFrame(rows)

    train_table, val_table = table("t", task.cluster), table("v", task.val_cluster)
    enc = ClipEncoder(root / "clip")  # frozen features, as the pipeline's encode stage would cache them

    def frozen(tab):
        inputs = [(enc.pixels_uint8(p), *enc.tokens(q)) for p, q in zip(tab["image"], tab["question"])]
        with torch.no_grad():
            vec = enc.embed(enc.model, *(torch.stack(x) for x in zip(*inputs))).numpy()
        half = vec.shape[1] // 2
        return Features(list(tab["id"]), vec[:, :half].copy(), vec[:, half:].copy())

    train, val = frozen(train_table), frozen(val_table)
    beam, pools = task.beams_and_pools(train.image, beams=1)
    val_pools, gold = task.val_pools(train.image, val.image)
    out = root / "v2_lora"
    cfg = {"epochs": 12, "batch_size": 16, "lr": 3e-3, "d_model": 32, "beam_ranks": 1, "dropout": 0.0}
    stats = train_selector("v2_lora", beam=beam, pools=pools, train_features=train, cfg=cfg, out_dir=out,
                           encoder_dir=str(root / "clip"), train_table=train_table, seed=0)
    return dict(root=root, train=train, val=val, train_table=train_table, val_table=val_table, beam=beam,
                pools=pools, val_pools=val_pools, gold=gold, out=out, stats=stats, cfg=cfg)


@pytest.mark.slow  # > 30 s on 2 cores: the slow tier (.ci/run)
def test_lora_learns_and_is_batch_independent(image_task):
    t = image_task
    sel = load_selector(t["out"])
    kw = dict(query_table=t["val_table"], pool_table=t["train_table"])
    ref = sel.select(t["val"], t["val_pools"], t["train"], shot=2, batch_size=64, **kw)
    assert sel.select(t["val"], t["val_pools"], t["train"], shot=2, batch_size=1, **kw) == ref
    assert sel.select(t["val"], t["val_pools"], t["train"], shot=2, batch_size=7, **kw) == ref
    assert hit_rate(ref, t["gold"]) >= 3 * chance(t["val_pools"])
    with pytest.raises(ValueError, match="query_table"):
        sel.select(t["val"], t["val_pools"], t["train"], shot=2)


@pytest.mark.slow  # > 30 s on 2 cores: the slow tier (.ci/run)
def test_lora_trainable_params_and_config(image_task):
    sel = load_selector(image_task["out"])
    peft_cfg = sel.clip.peft_config["default"]
    assert (peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout) == (16, 32, 0.1)
    assert set(peft_cfg.target_modules) == {"q_proj", "k_proj", "v_proj", "out_proj"}
    trainable = {n for n, p in sel.named_parameters() if p.requires_grad}
    clip_trainable = {n for n in trainable if n.startswith("clip.")}
    assert clip_trainable and all(".lora_A." in n or ".lora_B." in n for n in clip_trainable)
    n_attn = 2 * (2 + 2) * 4  # (vision + text layers) × q/k/v/out, A and B each
    assert len(clip_trainable) == n_attn
    assert any(n.startswith("cross_layers.") for n in trainable)  # the v2 head trains too
    assert not any(p.requires_grad for n, p in sel.named_parameters() if n.startswith("clip.") and "lora_" not in n)
    saved = load_file(str(image_task["out"] / "model.safetensors"))
    assert set(saved) == trainable  # frozen CLIP weights are not duplicated into the selector
    params = dict(sel.named_parameters())
    assert all(torch.equal(saved[n], params[n].detach()) for n in saved)
    # LoRA actually trained (B starts at zero) and was restored on load
    assert any(saved[n].abs().sum() > 0 for n in saved if ".lora_B." in n)


@pytest.mark.slow  # > 30 s on 2 cores: the slow tier (.ci/run)
def test_lora_same_seed_bit_identical(image_task, tmp_path):
    t = image_task
    cfg = {**t["cfg"], "epochs": 1}
    few = t["beam"].iloc[:24]

    def run(seed, name):
        train_selector("v2_lora", beam=few, pools=t["pools"], train_features=t["train"], cfg=cfg,
                       out_dir=tmp_path / name, encoder_dir=str(t["root"] / "clip"), train_table=t["train_table"],
                       seed=seed)
        return load_file(str(tmp_path / name / "model.safetensors"))

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# ---- v2_lora's cached vision states and fixed text length change no number -----------------------------------------
@pytest.fixture(scope="module")
def small_clip_task(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("clip_cache")
    words = "what colour is the shape on left right top bottom of this picture".split()
    build_tiny_clip(root / "clip", words)  # text tower: 16 positions; questions here: at most 5 + 2 tokens
    rng = np.random.default_rng(11)
    rows = []
    for i in range(24):
        path = root / f"t{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(40, 40, 3)).astype(np.uint8)).save(path)
        rows.append({"id": f"t{i}", "image": str(path), "question": " ".join(rng.choice(words, int(rng.integers(2, 6))))})
    table = pd.DataFrame(rows)
    pools = pd.DataFrame({"anchor": [f"t{a}" for a in range(24)],
                          "candidates": [[f"t{c}" for c in rng.permutation([j for j in range(24) if j != a])[:8]]
                                         for a in range(24)]})
    beam = pd.DataFrame({"anchor": pools["anchor"], "beam_rank": 0, "picked": [list(c[:2]) for c in pools["candidates"]]})
    return dict(root=root, table=table, pools=pools, beam=beam)


def _lora_epoch(t, *, text_length: int | None = None, from_pixels: bool = False) -> dict[str, torch.Tensor]:
    """One v2_lora epoch (LoRA dropout on) in float64.  ``text_length`` overrides the source's question length;
    ``from_pixels`` encodes every step from uint8 pixels through the whole vision tower (no cached states)."""
    from leverplus.tracks.vqa.icd.selector_training import supervised_epochs
    from leverplus.tracks.vqa.icd.selectors.common import compute_dtype
    from leverplus.tracks.vqa.icd.selectors.v2_lora import LoRAPointerSelector

    cfg = config_for("v2_lora", {"epochs": 1, "batch_size": 8, "d_model": 32, "beam_ranks": 1, "dtype": "float64"})
    with compute_dtype(cfg):
        torch.manual_seed(0)
        model, src = LoRAPointerSelector.for_training(cfg, None, encoder_dir=str(t["root"] / "clip"),
                                                      train_table=t["table"])
        enc = model.encoder
        src.text_length = text_length or src.text_length
        if from_pixels:
            def encode_rows(rows):
                inputs = [(enc.pixels_uint8(src.images[r]), *enc.tokens(src.questions[r])) for r in rows]
                px, ids, mask = (torch.stack(x) for x in zip(*inputs))
                return enc.embed(model.clip, px, ids[:, : src.text_length], mask[:, : src.text_length])

            src.encode_rows = encode_rows
        data = build_sequences(t["beam"], t["pools"], src, 1)
        supervised_epochs(model, data, src, shuffle=torch.Generator().manual_seed(0))
        return {k: v.detach().clone() for k, v in model.saved_parameters().items()}


def test_lora_cached_vision_states_bit_identical(small_clip_task):
    """Vision states cached per example (computed alone) train the same weights, bit for bit, as running the
    whole vision tower from pixels on each step's batch."""
    full = _lora_epoch(small_clip_task, text_length=16, from_pixels=True)
    cached = _lora_epoch(small_clip_task, text_length=16)
    assert set(cached) == set(full) and all(torch.equal(cached[k], full[k]) for k in cached)


def test_lora_image_path_is_get_image_features(small_clip_task):
    """The vision half of an example vector (states → layers → CLS → post-LayerNorm → projection) is what
    ``CLIPModel.get_image_features`` computes from the same pixels, bit for bit."""
    from leverplus.tracks.vqa.icd.selectors.common import compute_dtype
    from leverplus.tracks.vqa.icd.selectors.v2_lora import LoRAPointerSelector

    t = small_clip_task
    cfg = config_for("v2_lora", {"d_model": 32, "dtype": "float64"})
    with compute_dtype(cfg), torch.no_grad():
        model, src = LoRAPointerSelector.for_training(cfg, None, encoder_dir=str(t["root"] / "clip"),
                                                      train_table=t["table"])
        for name, p in model.clip.named_parameters():
            if "lora_B" in name:  # B starts at zero: make LoRA change the encodings
                p.normal_(0.0, 0.1)
        model.eval()
        enc = model.encoder
        px = torch.stack([enc.pixels_uint8(p) for p in src.images])
        pixel_values = (px.double() * enc.scale - enc.mean.double()) / enc.std.double()
        ref = torch.nn.functional.normalize(model.clip.get_image_features(pixel_values=pixel_values).pooler_output,
                                            dim=-1)
        vec = src.encode_rows(range(len(src.ids)))
    assert torch.equal(vec[:, : ref.shape[1]], ref)


def test_lora_text_length_and_full_length_dropout(small_clip_task, monkeypatch):
    """Questions at the source's fixed length (8 here, of the tower's 16) train the weights of the full length to
    float rounding: the dropped padding never reaches the pooled vector, and LoRA's text dropout draws the
    full-length masks.  With plain dropout (masks drawn for the shorter input) the weights are another draw."""
    from leverplus.tracks.vqa.icd.selectors import v2_lora

    full = _lora_epoch(small_clip_task, text_length=16)
    short = _lora_epoch(small_clip_task)
    assert all(torch.allclose(short[k], full[k], rtol=0, atol=1e-12) for k in full)
    monkeypatch.setattr(v2_lora.FullLengthDropout, "forward",
                        lambda self, x: torch.nn.functional.dropout(x, self.p, self.training))
    plain = _lora_epoch(small_clip_task)
    assert max(float((plain[k] - full[k]).abs().max()) for k in full) > 1e-6


def test_lora_source_text_length(small_clip_task):
    from leverplus.tracks.vqa.icd.selectors.common import compute_dtype
    from leverplus.tracks.vqa.icd.selectors.v2_lora import TEXT_LENGTH_MULTIPLE, LoRAPointerSelector

    t = small_clip_task
    cfg = config_for("v2_lora", {"d_model": 32, "dtype": "float64"})
    with compute_dtype(cfg):
        model, src = LoRAPointerSelector.for_training(cfg, None, encoder_dir=str(t["root"] / "clip"),
                                                      train_table=t["table"])
    longest = max(len(q.split()) + 2 for q in t["table"]["question"])  # + start and end of text
    assert src.text_length == -(-longest // TEXT_LENGTH_MULTIPLE) * TEXT_LENGTH_MULTIPLE == 8
    assert model.encoder.max_text_length == 16
