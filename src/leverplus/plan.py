"""`leverplus plan`: what a config's InfoScore beam searches cost — scored sequences and estimated hours per path.

Sequences per anchor (design.md §3): the zero-shot row, then at step s (0-based) every kept beam (1 at step 0,
`beam_size` after) extended by every pool candidate it does not hold (`cand_num − s`):

    1 + cand_num + Σ_{s=1}^{shot_num−1} beam_size · (cand_num − s)

Hours = sequences × seconds per scored sequence, per path (the original algorithm, "reference", and ours), from a
measurement: `leverplus bench-infoscore --arch …` on a small slice (its `seconds_per_sequence`), shipped for the
real models in `assets/bench/measured.json` with the command and machine that produced them, or given with
`--measured FILE` (a bench-infoscore JSON; applies to the model named by its `arch.name`, or `--measured
MODEL=FILE`). Assumptions, printed with the table: seconds per sequence are constant (the slice's prompts have
the same shot count and image size as the run's; a run's larger pools batch better, so "ours" is an upper bound),
one device, no shard parallelism (divide by the number of devices the shards run on).
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import yaml

from .config import deep_merge, run_config, validate_config


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


def load_config(configfiles: list[str], base: str | Path = "config/config.yaml",
                schema: str | Path = "config/config.schema.yaml") -> dict:
    """config/config.yaml with each --configfile deep-merged over it (as Snakemake does), validated."""
    with open(base, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    for extra in configfiles:
        with open(extra, encoding="utf-8") as f:
            config = deep_merge(config, yaml.safe_load(f) or {})
    return validate_config(config, schema)


def plan(config: dict, measured: dict, datasets: list[str] | None = None) -> dict:
    rows, missing = [], set()
    for name in datasets or [d for d in config["datasets"] if d != "demo"] or list(config["datasets"]):
        run = run_config(config, name)
        exp, beam = run["experiment"], run["beam"]
        per_anchor = sequences_per_anchor(exp["cand_num"], beam["beam_size"], beam["shot_num"])
        for model in exp["models"]:
            m = measured.get(model)
            for sampler in exp["samplers"]:
                for n in exp["sample_num"]:
                    seqs = n * per_anchor
                    row = {"dataset": name, "model": model, "sampler": sampler, "anchors": n,
                           "cand_num": exp["cand_num"], "beam_size": beam["beam_size"], "shot_num": beam["shot_num"],
                           "sequences": seqs}
                    if m:
                        for path in ("reference", "ours"):
                            row[f"hours_{path}"] = round(seqs * m["seconds_per_sequence"][path] / 3600, 1)
                    else:
                        missing.add(model)
                    rows.append(row)
    totals: dict = {}
    for r in rows:
        t = totals.setdefault(r["dataset"], {"sequences": 0, "hours_reference": 0.0, "hours_ours": 0.0})
        t["sequences"] += r["sequences"]
        for path in ("reference", "ours"):
            if f"hours_{path}" in r:
                t[f"hours_{path}"] = round(t[f"hours_{path}"] + r[f"hours_{path}"], 1)
    used = {k: v for k, v in measured.items() if any(r["model"] == k for r in rows)}
    devices = sorted({str(v.get("device")) for v in used.values()})
    return {
        "rows": rows,
        "totals": totals,
        "measured": used,
        "missing_measurements": sorted(missing),
        "assumptions": [
            "sequences per anchor = 1 + cand_num + sum_{s=1}^{shot_num-1} beam_size*(cand_num-s)",
            "hours = sequences x the measured seconds per scored sequence of each path (one device, no shard "
            "parallelism: divide by the devices the shards run on)",
            "the measured slice has the run's shot count and image size; a run's larger pools batch better, so "
            "'ours' is an upper bound",
            f"hours are for the device{'s' if len(devices) > 1 else ''} measured ({', '.join(devices) or 'none'}); "
            "another device (a GPU, bf16) needs its own measurement (--measured)",
        ],
    }


def plan_markdown(result: dict) -> str:
    lines = ["| dataset | model | sampler | anchors | sequences | hours (original) | hours (ours) |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['dataset']} | {r['model']} | {r['sampler']} | {r['anchors']} | {r['sequences']:,} | "
                     f"{r.get('hours_reference', 'n/a')} | {r.get('hours_ours', 'n/a')} |")
    for name, t in result["totals"].items():
        lines.append(f"| **{name} total** | | | | {t['sequences']:,} | {t['hours_reference']} | {t['hours_ours']} |")
    out = "\n".join(lines) + "\n\nMeasured speeds:\n"
    for model, m in result["measured"].items():
        s = m["seconds_per_sequence"]
        out += (f"- {model}: original {s['reference']} s/sequence, ours {s['ours']} s/sequence "
                f"({m.get('device')}, {m.get('dtype')}, {m.get('torch_threads')} threads; {m.get('source')})\n")
    if result["missing_measurements"]:
        out += f"- no measurement for: {', '.join(result['missing_measurements'])} (hours n/a)\n"
    out += "\nAssumptions:\n" + "".join(f"- {a}\n" for a in result["assumptions"])
    return out
