"""Training curves of one selector version, read from its trained selectors' `selector.json` (`training`): the
supervised (v0–v2_lora) or RCE (v3/v4) loss per epoch, and for GRPO (v3/v4) its loss, the policy's expected
reward over each anchor's beams, the clip fraction and the KL to the RCE policy per epoch.  One line per
(sampler, seed); a PNG written atomically."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

GRPO_PANELS = (("loss", "GRPO loss"), ("mean_reward", "policy's mean beam reward"),
               ("clip_fraction", "clip fraction"), ("kl", "KL to the RCE policy"))


def _label(path: str) -> str:
    # results/{dataset}/{model}/{sampler}_{n}/{version}/seed{s}/selector/selector.json
    parts = Path(path).parts
    return f"{parts[-5]} {parts[-3]}" if len(parts) >= 5 else path


def training_curves(selector_jsons: list[str]) -> list[dict]:
    out = []
    for p in selector_jsons:
        with open(p, encoding="utf-8") as f:
            t = json.load(f).get("training", {})
        out.append({"label": _label(p), "loss": t.get("loss_per_epoch", []), "grpo": t.get("grpo")})
    return out


def plot_training_curves(version: str, selector_jsons: list[str], out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = training_curves(selector_jsons)
    grpo = any(r["grpo"] for r in runs)
    panels = 1 + (len(GRPO_PANELS) if grpo else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    ax = axes[0][0]
    for r in runs:
        ax.plot(range(1, len(r["loss"]) + 1), r["loss"], marker=".", label=r["label"])
    ax.set(title=f"{version}: {'RCE' if grpo else 'cross-entropy'} loss", xlabel="epoch", ylabel="loss")
    for ax, (key, title) in zip(axes[0][1:], GRPO_PANELS):
        for r in runs:
            vals = (r["grpo"] or {}).get(key, [])
            if key == "mean_reward" and r["grpo"]:
                vals = [r["grpo"]["mean_reward_before"], *vals]
                ax.plot(range(len(vals)), vals, marker=".", label=r["label"])
            else:
                ax.plot(range(1, len(vals) + 1), vals, marker=".", label=r["label"])
        ax.set(title=f"{version}: {title}", xlabel="GRPO epoch")
    if runs:
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    out = Path(out_png)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=90, bbox_inches="tight")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
