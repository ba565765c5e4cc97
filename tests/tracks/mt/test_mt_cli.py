"""`leverplus score mt` and `leverplus meta-eval` on files."""

import json

import pytest

from leverplus.cli import main
from leverplus.tracks.mt import demo as mt_demo


def test_score_mt_then_meta_eval(tmp_path, capsys):
    df = mt_demo.generate_pair("en-hi", 30, 0)
    first = df[df["system"] == "sys_a"]
    (tmp_path / "ref.txt").write_text("\n".join(r[0] for r in first["refs"]) + "\n", encoding="utf-8")
    (tmp_path / "src.txt").write_text("\n".join(first["src"]) + "\n", encoding="utf-8")
    hyps = []
    for s in ("sys_a", "sys_c", "sys_e"):
        p = tmp_path / f"{s}.txt"
        p.write_text("\n".join(df[df["system"] == s]["hyp"]) + "\n", encoding="utf-8")
        hyps.append(str(p))
    seg = tmp_path / "seg.parquet"
    assert main(["score", "mt", "--hypotheses", *hyps, "--references", str(tmp_path / "ref.txt"), "--sources",
                 str(tmp_path / "src.txt"), "--lang-pair", "en-hi", "--resamples", "20", "--segments-out",
                 str(seg), "--out", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert "tok:intl" in s["metrics"]["bleu"]["sys_a"]["signature"]
    assert s["metrics"]["chrf"]["sys_a"]["score"] > s["metrics"]["chrf"]["sys_e"]["score"]
    assert main(["meta-eval", "--scores", str(seg), "--resamples", "20", "--out", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert set(m["levels"]) == {"none", "item", "system"} and "ter" in m["lower_is_better_negated"]
    i, j = m["metrics"].index("chrf"), m["metrics"].index("ter")
    assert m["levels"]["none"]["pearson"]["value"][i][j] > 0  # TER negated: agrees with chrF
    # a metric on the first 10 segments only (a judge subset): its cells use those 10, the others all 30
    import pandas as pd

    t = pd.read_parquet(seg)
    part = t[t["metric"] == "chrf"].copy()
    part = part[part["id"].isin(list(dict.fromkeys(part["id"]))[:10])].assign(metric="judge")
    pd.concat([t, part]).to_parquet(tmp_path / "seg2.parquet")
    assert main(["meta-eval", "--scores", str(tmp_path / "seg2.parquet"), "--resamples", "20", "--out",
                 str(tmp_path / "m2.json")]) == 0
    m2 = json.loads((tmp_path / "m2.json").read_text())
    k, c = m2["metrics"].index("judge"), m2["metrics"].index("chrf")
    assert m2["n_segments_cell"][k][c] == 10 and m2["n_segments_cell"][c][j] == 30
    assert m2["levels"]["none"]["pearson"]["value"][k][c] == pytest.approx(1.0)  # the same scores on those 10


def test_score_mt_bad_input_names_file(tmp_path, capsys):
    (tmp_path / "ref.txt").write_text("a\nb\n")
    (tmp_path / "A.txt").write_text("a\n")
    rc = main(["score", "mt", "--hypotheses", str(tmp_path / "A.txt"), "--references", str(tmp_path / "ref.txt"),
               "--lang-pair", "en-id"])
    assert rc == 2 and "A.txt: 1 lines" in capsys.readouterr().err
