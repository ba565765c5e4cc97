"""The audio comparison's PNG: output-length histograms, latency distributions, the cascade Pareto curve."""
from __future__ import annotations

import numpy as np


def comparison_png(out: dict, arms: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leverplus.core.io import atomic_write

    from leverplus.tracks.audio.report import BASE_ARMS

    base = [a for a in BASE_ARMS if a in arms]
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.6))
    hi = max(int(max(arms[a].lengths.max() for a in base)) + 2, 8)
    bins = np.arange(0, hi + 1)
    for a in base:
        ax[0].hist(arms[a].lengths, bins=bins, histtype="step", linewidth=1.5, label=a)
    ax[0].axvline(out.get("short_chars", 6) + 0.5, color="grey", ls=":")
    ax[0].set(title="output length (characters)", xlabel="characters", ylabel="clips")
    ax[0].legend()
    data = [arms[a].total for a in base] + [arms[a].ttft for a in base]
    labels = [f"{a}\ntotal" for a in base] + [f"{a}\nTTFT" for a in base]
    ax[1].boxplot(data, showfliers=False)
    ax[1].set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax[1].set_yscale("log")
    ax[1].set(title="latency per timed request (s)", ylabel="seconds (log)")
    sw = out["cascade"]["sweep"]
    x = [p["mean_total_s"] for p in sw]
    y = [p["quality"] for p in sw]
    err = np.array([[p["quality"] - p["quality_ci95"][0], p["quality_ci95"][1] - p["quality"]] for p in sw]).T
    ax[2].errorbar(x, y, yerr=err, marker="o", capsize=3)
    for p in sw:
        label = f"{p['arm'].replace('cascade_', '')} ({100 * p['escalation_rate']:.0f}%)"
        ax[2].annotate(label, (p["mean_total_s"], p["quality"]), fontsize=7, textcoords="offset points",
                       xytext=(4, 4))
    ax[2].set(title="cascade: quality vs mean latency", xlabel="mean total latency per timed clip (s)",
              ylabel=out["cascade"]["quality_metric"])
    fig.suptitle(f"audio captions, {out['dataset']} (quality: n = {out['n_items']} clips; latency: "
                 f"n = {out['n_timed']} timed requests per arm)")
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
