"""`leverplus plan`: what a config's InfoScore beam searches cost — scored sequences and predicted hours per path.

Sequences per anchor (design.md §3): the zero-shot row, then at step s (0-based) every kept beam (1 at step 0,
`beam_size` after) extended by every pool candidate it does not hold (`cand_num − s`):

    1 + cand_num + Σ_{s=1}^{shot_num−1} beam_size · (cand_num − s)

Hours come from the cost model (`leverplus.tracks.vqa.cost`): unit costs of the model measured on a machine (vision per image,
language model per token at several batch sizes, lengths and prefixes, LM head per position), composed step by step
for the run's pool, beam, shots, construct order, batch size and row shape — for the original algorithm batched as
Lever-LM runs it (`original`, batch 32), the original at batch 1 (`reference`), ours, and the analytic limit. The
unit costs are shipped for the real architectures in `assets/bench/unit_costs.json` (with the command and machine
that measured them) or given with `--unit-costs MODEL=FILE` (`leverplus bench-costs`). A model without unit costs
falls back to a measured seconds-per-sequence (`assets/bench/measured.json` or `--measured`), marked as such:
one slice's cost per sequence times a count, which a different pool or beam size biases. Assumptions are printed
with the table.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import yaml

from leverplus.core.config import deep_merge, run_config, validate_config


def sequences_per_anchor(cand_num: int, beam_size: int, shot_num: int) -> int:
    if shot_num < 1:
        return 1
    return 1 + cand_num + sum(beam_size * (cand_num - s) for s in range(1, shot_num))


def shipped_measurements() -> dict:
    path = resources.files("leverplus") / "assets" / "bench" / "measured.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def measurement_from_bench(path: str | Path) -> tuple[str | None, dict]:
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    if "seconds_per_sequence" not in d:
        raise ValueError(f"{path}: not a bench-infoscore result (no seconds_per_sequence)")
    name = (d.get("arch") or {}).get("name")
    return name, {
        "seconds_per_sequence": d["seconds_per_sequence"],
        "source": f"{path}",
        "device": d.get("device"),
        "dtype": d.get("dtype", "float32"),
        "torch_threads": d.get("torch_threads"),
        "slice": {k: d.get(k) for k in ("anchors", "cand_num", "beam_size", "shot_num")},
    }


# the config files the Snakefile loads for the VQA track, in its order (its `configfile:` lines): the real runs, then
# the demo (tests/test_config.py checks the Snakefile against this)
WORKFLOW_CONFIGS = ("config/config.yaml", "config/vqa_demo.yaml")


def load_config(configfiles: list[str], base: str | Path | tuple = WORKFLOW_CONFIGS,
                schema: str | Path = "config/config.schema.yaml") -> dict:
    """The Snakefile's config files (`base`: one path or several) with each --configfile deep-merged over them (as
    Snakemake does), validated."""
    bases = [base] if isinstance(base, (str, Path)) else list(base)
    config: dict = {}
    for extra in [*bases, *configfiles]:
        with open(extra, encoding="utf-8") as f:
            config = deep_merge(config, yaml.safe_load(f) or {})
    return validate_config(config, schema)


def shipped_unit_costs() -> dict:
    path = resources.files("leverplus") / "assets" / "bench" / "unit_costs.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


PATHS = ("original", "reference", "ours", "limit")


def plan(config: dict, measured: dict, datasets: list[str] | None = None, unit_costs: dict | None = None) -> dict:
    """Rows per (dataset, model, sampler, sample_num). `unit_costs` (per model) drive the cost model; `measured`
    (per model, seconds per sequence) is the fallback for models without unit costs."""
    from leverplus.tracks.vqa.cost import SliceConfig, cpu_view, predict

    # unit costs measured in CPU seconds too (`cost.cpu_view`) are composed in CPU seconds: on the shared machine that
    # measured them, wall seconds carry its load at the time; CPU seconds are what a machine running nothing else takes
    unit_costs = {k: (cpu_view(u) or u) for k, u in (unit_costs or {}).items()}
    rows, missing, fallback = [], set(), set()
    real = [d for d, spec in config["datasets"].items() if (spec or {}).get("source") != "demo"]  # not the demos
    for name in datasets or real or list(config["datasets"]):
        run = run_config(config, name)
        exp, beam = run["experiment"], run["beam"]
        per_anchor = sequences_per_anchor(exp["cand_num"], beam["beam_size"], beam["shot_num"])
        for model in exp["models"]:
            u, m = unit_costs.get(model), measured.get(model)
            for sampler in exp["samplers"]:
                for n in exp["sample_num"]:
                    seqs = n * per_anchor
                    row = {"dataset": name, "model": model, "sampler": sampler, "anchors": n,
                           "cand_num": exp["cand_num"], "beam_size": beam["beam_size"], "shot_num": beam["shot_num"],
                           "sequences": seqs}
                    if u:
                        shape = {k: v for k, v in u["shape"].items() if k != "adapter"}
                        cfg = SliceConfig(anchors=n, cand_num=exp["cand_num"], beam_size=beam["beam_size"],
                                          shot_num=beam["shot_num"], order=beam.get("construct_order", "right"),
                                          batch_size=int(run["models"][model].get("batch_size", 32)),
                                          original_batch=32, adapter=u["adapter"], **shape)
                        pred = predict(u, cfg)
                        for path in PATHS:
                            row[f"hours_{path}"] = round(pred[path] / 3600, 1)
                        scope = (u.get("held_out_check") or {}).get("scope")  # a check not at these costs' size
                        row["basis"] = f"cost model ({scope})" if scope else "cost model"
                    elif m:
                        spq = m["seconds_per_sequence"]
                        for path in ("original", "reference", "ours"):  # shipped measurements: batch 1 only
                            if path in spq:
                                row[f"hours_{path}"] = round(seqs * spq[path] / 3600, 1)
                        row["basis"] = "seconds per sequence of one slice (biased)"
                        fallback.add(model)
                    else:
                        missing.add(model)
                    rows.append(row)
    totals: dict = {}
    for r in rows:  # a path's total only where every row of the dataset has that path's hours
        t = totals.setdefault(r["dataset"], {"sequences": 0, **{f"hours_{p}": 0.0 for p in PATHS}})
        t["sequences"] += r["sequences"]
        for path in PATHS:
            key = f"hours_{path}"
            t[key] = round(t[key] + r[key], 1) if key in r and t[key] != "n/a" else "n/a"
    used_u = {k: v for k, v in unit_costs.items() if any(r["model"] == k for r in rows)}
    used = {k: v for k, v in measured.items() if k in fallback}
    devices = sorted({str(v.get("device")) for v in (*used.values(), *used_u.values())})
    return {
        "rows": rows,
        "totals": totals,
        "unit_costs": used_u,
        "measured": used,
        "missing_measurements": sorted(missing),
        "assumptions": [
            "sequences per anchor = 1 + cand_num + sum_{s=1}^{shot_num-1} beam_size*(cand_num-s)",
            "hours from the cost model (leverplus.tracks.vqa.cost): the unit costs below composed per step for the run's pool, "
            "beams, shots, construct order and batch sizes (original: Lever-LM's batch 32; reference: batch 1); "
            "rows of a step have the measured mean shape; pools of different anchors share no image",
            "one device, no shard parallelism: divide by the devices the shards run on",
            "unit costs in CPU seconds (where measured) are hours of a machine running nothing else; wall-second unit "
            "costs carry the load of the machine while they were measured",
            f"hours are for the device{'s' if len(devices) > 1 else ''} measured ({', '.join(devices) or 'none'}); "
            "another device (a GPU, bf16) needs its own unit costs (leverplus bench-costs, --unit-costs)",
        ],
    }


def plan_markdown(result: dict) -> str:
    lines = ["| dataset | model | sampler | anchors | sequences | hours (original, batch 32) | hours (original, batch 1) "
             "| hours (ours) | hours (limit) | basis |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        cells = " | ".join(str(r.get(f"hours_{p}", "n/a")) for p in PATHS)
        lines.append(f"| {r['dataset']} | {r['model']} | {r['sampler']} | {r['anchors']} | {r['sequences']:,} | "
                     f"{cells} | {r.get('basis', 'no measurement')} |")
    for name, t in result["totals"].items():
        cells = " | ".join(str(t[f"hours_{p}"]) for p in PATHS)
        lines.append(f"| **{name} total** | | | | {t['sequences']:,} | {cells} | |")
    out = "\n".join(lines) + "\n\nCost-model inputs (unit costs):\n"
    for model, u in result["unit_costs"].items():
        lm = ", ".join(f"{k} {v:.3g} s" for k, v in u["lm"].items())
        sh = u["shape"]
        clock = "CPU seconds of the measuring process" if "process_cpu" in u else "wall seconds"
        out += (f"- {model} ({clock}): vision {u['vision_per_image']:.3g} s/image + {u.get('vision_per_call', 0.0):.3g} s/forward; "
                f"LM {lm} (fit max rel. error "
                f"{u['lm_fit_max_rel_error']:.2f}); LM head {u['head_per_token']:.3g} s/position; row shape: "
                f"{sh['head_tokens']:.0f} head + {sh['demo_tokens']:.1f}/demonstration + {sh['query_tokens']:.1f} query "
                f"tokens, {sh['answer_tokens']:.1f} scored ({u.get('device')}, {u.get('dtype')}, "
                f"{u.get('torch_threads')} threads; {u.get('command', '?')}; {u.get('machine', '')})\n")
        h = u.get("held_out_check")
        if h:
            errs = ", ".join(f"{p} measured {h['measured_seconds'][p]} s, predicted {h['predicted_seconds'][p]} s "
                             f"({h['relative_error'][p]:+.1%})" for p in h["measured_seconds"])
            scope = f" [{h['scope']}]" if h.get("scope") else ""  # e.g. a check made at another image size
            out += f"  held-out check ({h['command']}): {errs}{scope}\n"
    for model, m in result["measured"].items():
        s = m["seconds_per_sequence"]
        out += (f"- {model}: no unit costs; seconds per sequence of one slice: "
                + ", ".join(f"{p} {s[p]}" for p in ("original", "reference", "ours") if p in s)
                + f" ({m.get('device')}, {m.get('dtype')}, {m.get('torch_threads')} threads; "
                f"{m.get('source')})\n")
    if result["missing_measurements"]:
        out += f"- no measurement for: {', '.join(result['missing_measurements'])} (hours n/a)\n"
    out += "\nAssumptions:\n" + "".join(f"- {a}\n" for a in result["assumptions"])
    return out
