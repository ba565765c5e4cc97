"""Accuracy vs shot per sampler, with baselines, as a PNG (written atomically)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd


def plot_accuracy_vs_shot(result: dict, out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = pd.DataFrame(result["cells"])
    bases = pd.DataFrame(result["baselines"])
    groups = list(cells.groupby(["model", "sample_num"])) if len(cells) else []
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(6 * max(1, len(groups)), 4.2), squeeze=False)
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
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_png)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
