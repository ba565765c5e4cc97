"""METEOR 1.5 through its stdio protocol equals the same jar run directly on files (its own command-line mode)."""

import os
import re
import shutil
import subprocess

import pytest

from leverplus.metrics import meteor as M

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")]

# case and untokenised punctuation differ between hypotheses and references, so the jar's -norm (lowercase +
# tokenise) changes the scores: leaving it out on either side fails the test
HYPS = ["The cat sat on the mat.", "a man is playing the guitar in the street", "Hello, world!"]
REFS = [["the cat is sitting on the mat ."], ["A man plays a guitar on the street."], ["hello world"]]


def test_meteor_equals_jar_run_directly(tmp_path):
    mine = M.meteor(HYPS, REFS, lang="en")
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("\n".join(HYPS) + "\n")
    ref.write_text("\n".join(r[0] for r in REFS) + "\n")
    jar = M.jar_path()
    out = subprocess.run(["java", "-Xmx2G", "-jar", os.path.basename(jar), str(hyp), str(ref), "-l", "en", "-norm"],
                         cwd=os.path.dirname(jar), capture_output=True, text=True, check=True).stdout
    seg = [float(x) for x in re.findall(r"Segment \d+ score:\s*([0-9.]+)", out)]
    final = float(re.search(r"Final score:\s*([0-9.]+)", out).group(1))
    assert mine["per_segment"] == pytest.approx(seg, abs=1e-6)
    assert mine["score"] == pytest.approx(final, abs=1e-6)
    assert "lang:en" in mine["signature"] and "version:1.5" in mine["signature"]


def test_not_applicable_is_explicit():
    assert not M.supported("hi") and M.not_applicable("hi")["status"] == "not applicable"
    with pytest.raises(M.MeteorUnavailable, match="not shipped"):
        M.meteor(HYPS, REFS, lang="id")
