"""The accuracy-vs-shot figure: whole-number shot ticks, and a legend that covers no data."""
from __future__ import annotations

import pytest

from leverplus.tracks.vqa.report.plots import accuracy_vs_shot_figure, plot_accuracy_vs_shot


def _result(shots=(1, 2)) -> dict:
    cells, bases = [], []
    for model in ("m_a", "m_b"):
        for i, sampler in enumerate(("rand", "img_sim", "mix")):
            for k in shots:
                s = 30.0 + 10 * i + 5 * k
                cells.append({"model": model, "sampler": sampler, "sample_num": 8, "shot": k, "score": s, "n": 50,
                              "ci95": [s - 4, s + 4]})
        bases.append({"model": model, "retriever": "zero_shot", "shot": 0, "score": 20.0, "n": 50, "ci95": [15, 25]})
        for r, base in (("random", 25.0), ("img_sim", 45.0)):
            bases += [{"model": model, "retriever": r, "shot": k, "score": base + k, "n": 50, "ci95": [0, 100]}
                      for k in shots]
    return {"dataset": "demo", "version": "v1", "cells": cells, "baselines": bases}


@pytest.mark.parametrize("shots", [(1, 2), (1, 2, 3, 4)])
def test_shot_ticks_are_the_whole_shot_numbers(shots):
    import matplotlib.pyplot as plt

    fig = accuracy_vs_shot_figure(_result(shots))
    try:
        fig.canvas.draw()
        assert len(fig.axes) == 2
        for ax in fig.axes:
            assert list(ax.get_xticks()) == list(shots)
            assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in shots]
    finally:
        plt.close(fig)


def test_legend_covers_no_data():
    import matplotlib.pyplot as plt

    fig = accuracy_vs_shot_figure(_result((1, 2, 3, 4)))
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend().get_window_extent(renderer)
            # every line, band and marker is drawn inside its axes: a legend off the axes covers none of them
            assert not legend.overlaps(ax.get_window_extent(renderer)), (legend, ax.get_window_extent(renderer))
            for line in ax.get_lines():
                assert not legend.overlaps(line.get_window_extent(renderer))
            others = [o for o in fig.axes if o is not ax]
            assert not any(legend.overlaps(o.get_window_extent(renderer)) for o in others)
    finally:
        plt.close(fig)


def test_png_keeps_the_outside_legend(tmp_path):
    from PIL import Image

    out = tmp_path / "v1.png"
    plot_accuracy_vs_shot(_result(), str(out))
    width, height = Image.open(out).size
    # two 8-inch panels at 110 dpi, cropped tight around axes and legends: wider than the panels' axes alone
    assert width > 1200 and height > 300
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind
