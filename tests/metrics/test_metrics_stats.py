"""Bootstrap, paired bootstrap and McNemar: known answers with their sources."""

import numpy as np
import pytest

from leverplus.metrics.stats import bootstrap_ci, format_with_ci, mcnemar, paired_bootstrap, summarize


def test_bootstrap_constant_values_has_degenerate_interval():
    # every resample of a constant sample has the same mean (definition of the percentile bootstrap)
    assert bootstrap_ci(np.full(50, 0.7)) == pytest.approx((0.7, 0.7))


def test_bootstrap_matches_binomial_standard_error():
    # 200 successes in 400 Bernoulli trials: normal-approximation 95% CI is
    # 0.5 +/- 1.96 * sqrt(0.25/400) = [0.451, 0.549] (textbook binomial SE); the percentile
    # bootstrap with 4000 resamples agrees within Monte Carlo error (+/- 0.006)
    values = np.array([1.0] * 200 + [0.0] * 200)
    lo, hi = bootstrap_ci(values, n_resamples=4000, seed=1)
    assert lo == pytest.approx(0.451, abs=0.006)
    assert hi == pytest.approx(0.549, abs=0.006)


def test_bootstrap_is_seeded_and_corpus_statistic_path_agrees_with_mean_path():
    rng = np.random.default_rng(3)
    v = rng.random(30)
    a = bootstrap_ci(v, seed=5)
    assert a == bootstrap_ci(v, seed=5)  # same seed -> identical interval
    assert a != bootstrap_ci(v, seed=6)
    # a statistic over a list of items (the corpus path) sees the same resamples as the fast mean path
    items = [(float(x),) for x in v]
    b = bootstrap_ci(items, statistic=lambda rows: float(np.mean([r[0] for r in rows])), seed=5)
    assert b == pytest.approx(a, abs=1e-12)


def test_paired_bootstrap_identical_systems():
    # identical systems: difference 0, interval [0, 0], and every resample is as extreme as 0 -> p = 1
    v = np.linspace(0, 1, 20)
    r = paired_bootstrap(v, v)
    assert r["diff"] == 0.0 and r["ci95"] == [0.0, 0.0] and r["p_value"] == 1.0 and r["n"] == 20


def test_paired_bootstrap_dominating_system():
    # A right on every item, B wrong on every item: every resample has diff 1; none is as far from 1
    # as 0 is, so p = 1/(B+1) (the smallest value of the (1+count)/(1+B) estimator)
    r = paired_bootstrap(np.ones(25), np.zeros(25), n_resamples=999)
    assert r["diff"] == 1.0 and r["ci95"] == [1.0, 1.0]
    assert r["p_value"] == pytest.approx(1 / 1000)


def test_paired_bootstrap_requires_same_items():
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 0.0], [1.0])


def _pairs(b01, b10, both=0, neither=0):
    a = [0] * b01 + [1] * b10 + [1] * both + [0] * neither
    b = [1] * b01 + [0] * b10 + [1] * both + [0] * neither
    return a, b


def test_mcnemar_armitage_berry_example():
    # StatsDirect manual, McNemar example from Armitage & Berry (1994, p.127): discordant 12 and 2
    # (concordant 20 and 16) -> Yates-corrected chi2 = 5.785714, P = 0.0162; exact (Liddell) P = 0.0129
    a, b = _pairs(12, 2, both=20, neither=16)
    chi = mcnemar(a, b, exact=False)
    assert (chi["b01"], chi["b10"]) == (12, 2)
    assert chi["statistic"] == pytest.approx(5.785714, abs=1e-6)
    assert chi["p_value"] == pytest.approx(0.0162, abs=1e-4)
    ex = mcnemar(a, b)  # 14 discordant < 25 -> exact by default
    assert ex["exact"] is True
    assert ex["p_value"] == pytest.approx(0.0129, abs=1e-4)  # = 2*(1+14+91)/2**14


def test_mcnemar_exact_calcugator_example():
    # calcugator chi2_mcnemar example (death-penalty survey): 11 vs 3 changes,
    # two-tailed exact probability 0.05737304687500008 (= 2*(1+14+91+364)/2**14)
    a, b = _pairs(11, 3, both=1, neither=5)
    assert mcnemar(a, b)["p_value"] == pytest.approx(0.057373046875, abs=1e-12)


def test_mcnemar_no_discordant_pairs():
    assert mcnemar([1, 0, 1], [1, 0, 1])["p_value"] == 1.0


def test_summarize_and_format():
    s = summarize([1.0, 1.0, 0.0, 1.0], scale=100)  # mean 3/4 -> 75.0
    assert s["mean"] == 75.0 and s["n"] == 4
    assert format_with_ci(75.0, [50.0, 100.0], n=4) == "75.00 [50.00, 100.00] (n=4)"


def test_scoring_jobs_do_not_import_scipy_stats():
    """scipy.stats (~1 s of import) loads where a test needs it, not in every inference job that scores."""
    import subprocess
    import sys

    code = "import sys, leverplus.tracks.vqa.stages.infer, leverplus.metrics.stats; print('scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
