"""Accuracy vs shot per sampler, with baselines, as a PNG (written atomically): one panel per (model, sample_num),
ticks at the whole shot numbers that were run, the legend outside the axes so that it covers no data."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd


def shot_ticks(cells: pd.DataFrame, bases: pd.DataFrame) -> list[int]:
    """The shot numbers drawn as points (zero-shot is a horizontal line, not a tick)."""
    shots = set(cells["shot"]) if len(cells) else set()
    shots |= {k for k in bases["shot"] if k} if len(bases) else set()
    return sorted(int(k) for k in shots)


def accuracy_vs_shot_figure(result: dict):
    """The matplotlib figure of `result` (an aggregate results dict); the caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = pd.DataFrame(result["cells"])
    bases = pd.DataFrame(result["baselines"])
    groups = list(cells.groupby(["model", "sample_num"])) if len(cells) else []
    shots = shot_ticks(cells, bases)
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(8 * max(1, len(groups)), 4.2), squeeze=False)
    for ax, ((model, n), g) in zip(axes[0], groups):
        for sampler, s in g.groupby("sampler"):
            s = s.sort_values("shot")
            lo = [c[0] for c in s["ci95"]]
            hi = [c[1] for c in s["ci95"]]
            ax.plot(s["shot"], s["score"], marker="o", label=f"{result['version']} / {sampler}")
            ax.fill_between(s["shot"], lo, hi, alpha=0.15)
        b = bases[bases.model == model] if len(bases) else bases
        for retriever, s in b.groupby("retriever") if len(b) else []:
            if retriever == "zero_shot":
                ax.axhline(s["score"].iloc[0], color="grey", linestyle=":", label="zero-shot")
                continue
            s = s.sort_values("shot")
            ax.plot(s["shot"], s["score"], linestyle="--", marker="x", label=f"baseline {retriever}")
        ax.set_title(f"{result['dataset']} · {model} · sample_num {n}")
        ax.set_xlabel("shots")
        ax.set_ylabel("VQA accuracy (%)")
        ax.grid(alpha=0.3)
        ax.set_xticks(shots)  # shots are whole numbers: no 1.5-shot ticks
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # beside the axes
    fig.tight_layout()
    return fig


def plot_accuracy_vs_shot(result: dict, out_png: str) -> None:
    import matplotlib.pyplot as plt

    fig = accuracy_vs_shot_figure(result)
    out = Path(out_png)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")  # keeps the outside legend in the picture
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


SIMILARITY = ("img_sim", "text_sim")


def versions_figure(result: dict):
    """The answer in one picture (a ``compare_versions`` result): per grid cell, left every version (mean over its
    seeds, 95% CI over questions and seeds) and every baseline (95% CI over questions) as dots with whiskers; right
    each version's paired difference to image- and text-similarity retrieval with its seed-aware 95% CI and a line
    at 0 (a whisker that crosses it: inside the noise). The caller closes the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(v["model"], v["sampler"], v["sample_num"], v["shot"]) for v in result.get("versions", [])})
    fig, axes = plt.subplots(max(1, len(cells)), 2, figsize=(13, 0.5 + 0.42 * max(8, len(result.get("versions", []))
                                                                                  + len(result.get("baselines", [])))),
                             squeeze=False)
    for (ax_abs, ax_diff), (model, sampler, n, shot) in zip(axes, cells):
        rows = [(v["version"], v["score"], v["ci95"], "C0") for v in result["versions"]
                if (v["model"], v["sampler"], v["sample_num"], v["shot"]) == (model, sampler, n, shot)]
        rows += [(f"baseline {b['retriever']}", b["score"], b["ci95"], "C1" if b["retriever"] in SIMILARITY else "grey")
                 for b in result.get("baselines", []) if b["model"] == model and b["shot"] == shot]
        ys = list(range(len(rows)))[::-1]
        for y, (_label, score, ci, colour) in zip(ys, rows):
            ax_abs.errorbar(score, y, xerr=[[score - ci[0]], [ci[1] - score]], fmt="o", color=colour, capsize=3)
        ax_abs.set_yticks(ys, [r[0] for r in rows])
        ax_abs.set_xlabel("VQA accuracy (%), 95% CI")
        ax_abs.set_title(f"{result['dataset']} · {model} · {sampler}_{n} · {shot} shots")
        ax_abs.grid(alpha=0.3, axis="x")
        diffs = [r for r in result.get("vs_baselines", []) if r["vs"] in SIMILARITY
                 and (r["model"], r["sampler"], r["sample_num"], r["shot"]) == (model, sampler, n, shot)]
        labels = [f"{r['version']} − {r['vs']}" for r in diffs]
        ys = list(range(len(diffs)))[::-1]
        for y, r in zip(ys, diffs):
            colour = {"better": "C2", "worse": "C3"}.get(r["verdict"], "grey")
            ax_diff.errorbar(r["diff"], y, xerr=[[r["diff"] - r["ci95"][0]], [r["ci95"][1] - r["diff"]]], fmt="o",
                             color=colour, capsize=3)
        ax_diff.axvline(0, color="black", linewidth=0.8)
        ax_diff.set_yticks(ys, labels)
        ax_diff.set_xlabel("paired Δ vs similarity retrieval (points), 95% CI over questions and seeds")
        ax_diff.set_title("green: better, red: worse, grey: inside the noise")
        ax_diff.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def plot_versions(result: dict, out_png: str) -> None:
    import matplotlib.pyplot as plt

    fig = versions_figure(result)
    out = Path(out_png)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
