"""The statistics against scipy on known data."""
import numpy as np
import pytest
from scipy import stats as st

from ownership import stats


def test_paired_test_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, 25), rng.uniform(0, 1, 25) * 0.8
    ours = stats.paired_test(a, b, tau=0.0)
    ref = st.ttest_rel(a, b, alternative="greater")
    assert ours["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert ours["t"] == pytest.approx(ref.statistic, rel=1e-10)
    assert ours["delta_mu"] == pytest.approx(np.mean(a - b))


def test_paired_test_margin_tau():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0.3, 1, 30), rng.uniform(0, 0.6, 30)
    tau = 0.2
    ours = stats.paired_test(a, b, tau)
    ref = st.ttest_1samp(a - b - tau, 0.0, alternative="greater")
    assert ours["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    # a larger margin can only make the evidence weaker
    assert stats.paired_test(a, b, 0.4)["p_value"] > ours["p_value"]


def test_paired_test_known_value():
    # d = [1, 2, 3]: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3, df 2; for df 2 the t survival
    # function has the closed form 0.5 * (1 - t / sqrt(t^2 + 2)) = 0.5 * (1 - sqrt(12 / 14)) = 0.03709
    r = stats.paired_test([1, 2, 3], [0, 0, 0], 0.0)
    assert r["t"] == pytest.approx(2 * np.sqrt(3))
    assert r["p_value"] == pytest.approx(0.5 * (1 - np.sqrt(12 / 14)), rel=1e-12)


def test_paired_test_constant_differences():
    assert stats.paired_test([0.9] * 5, [0.1] * 5, 0.0)["p_value"] == 0.0
    assert stats.paired_test([0.1] * 5, [0.1] * 5, 0.0)["p_value"] == 1.0


def test_welch_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.5, 0.1, 10), rng.normal(0.4, 0.3, 10)
    t, p = stats.welch_test(a, b)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic, rel=1e-10)
    assert p == pytest.approx(ref.pvalue, rel=1e-10)


def test_reference_protocol_matches_scipy_reimplementation():
    rng = np.random.default_rng(4)
    ps, pb = rng.uniform(0.4, 1, 200), rng.uniform(0, 0.7, 200)
    ours = stats.reference_test(ps, pb, m=10, draws=40, seed=7)
    # the same draws, with scipy doing the tests
    r = np.random.default_rng(7)
    pvals, mus = [], []
    for _ in range(40):
        a = ps[r.choice(200, 10, replace=False)]
        b = pb[r.choice(200, 10, replace=False)]
        pvals.append(st.ttest_ind(a, b, equal_var=False).pvalue)
        mus.append(a.mean() - b.mean())
    assert ours["p_value"] == pytest.approx(st.hmean(pvals), rel=1e-9)
    assert ours["delta_mu"] == pytest.approx(np.mean(mus), rel=1e-12)


def test_reference_protocol_is_two_sided():
    # the reference's Welch test is two-sided: a suspect *less* likely stolen than the reference is
    # also "significant" - one reason the paper's one-sided test is the default here
    rng = np.random.default_rng(5)
    ps, pb = rng.uniform(0, 0.2, 100), rng.uniform(0.5, 1, 100)
    assert stats.reference_test(ps, pb, m=10, seed=0)["p_value"] < 0.01
    assert stats.paired_test(ps, pb, 0.0)["p_value"] > 0.99


def test_paired_all_is_the_largest_scipy_p():
    rng = np.random.default_rng(3)
    s = rng.uniform(0.4, 1, 12)
    refs = [rng.uniform(0, 0.7, 12) for _ in range(4)]
    r = stats.paired_all_test(s, refs, 0.0)
    assert r["p_value"] == pytest.approx(max(st.ttest_rel(s, b, alternative="greater").pvalue for b in refs),
                                         rel=1e-10)
    assert r["delta_mu"] == pytest.approx(s.mean() - np.mean(refs))
    assert r["k"] == 4


def test_spread_test_known_value():
    # references' means 0.1, 0.2, 0.3: mean 0.2, sd 0.1; suspect 0.6 -> t = 0.4 / (0.1 sqrt(4/3)) = 2 sqrt 3,
    # df 2, so p has the closed form of test_paired_test_known_value
    refs = [np.full(5, 0.1), np.full(5, 0.2), np.full(5, 0.3)]
    r = stats.spread_test(np.full(5, 0.6), refs)
    assert r["t"] == pytest.approx(2 * np.sqrt(3))
    assert r["p_value"] == pytest.approx(0.5 * (1 - np.sqrt(12 / 14)), rel=1e-12)
    assert r["delta_mu"] == pytest.approx(0.4)
    assert r["p_value"] == pytest.approx(st.t.sf(2 * np.sqrt(3), 2), rel=1e-12)


def test_spread_test_holds_its_level_under_the_null():
    # suspect and K references drawn from one normal population of model means: the test rejects
    # at about its level (a prediction interval), whatever the between-model spread
    rng = np.random.default_rng(4)
    k, n, alpha = 4, 20000, 0.05
    means = rng.normal(0.3, 0.15, (n, k + 1))
    rejected = [stats.spread_test(np.array([row[0]]), [np.array([v]) for v in row[1:]])["p_value"] < alpha
                for row in means]
    assert 0.04 < np.mean(rejected) < 0.06
    # while the paired test against one of them rejects far more often once each model mean is
    # measured on a few images with small noise (it sees no spread between models)
    noise = rng.normal(0, 0.05, (2000, 2, 10))
    paired = [stats.paired_test(means[i, 0] + noise[i, 0], means[i, 1] + noise[i, 1], 0.0)["p_value"] < alpha
              for i in range(2000)]
    assert np.mean(paired) > 0.3


def test_spread_test_needs_two_references():
    with pytest.raises(ValueError):
        stats.spread_test(np.ones(3), [np.zeros(3)])


def test_verify_takes_references_as_list_or_rows():
    from ownership import verify
    P = lambda test: verify.Protocol(test, m=10, tau=0.0, alpha=0.01)  # noqa: E731
    rng = np.random.default_rng(5)
    s, refs = rng.uniform(0.5, 1, 40), rng.uniform(0, 0.6, (4, 40))
    as_list = verify.test(s, list(refs), P("paired-all"), seed=1)
    as_rows = verify.test(s, refs, P("paired-all"), seed=1)
    assert as_list["p_value"] == as_rows["p_value"] and as_list["k"] == 4
    idx = np.array(as_list["images"])
    assert as_list["p_value"] == pytest.approx(max(st.ttest_rel(s[idx], r[idx], alternative="greater").pvalue
                                                   for r in refs), rel=1e-10)
    # with one reference, paired-all is the paper's test
    assert verify.test(s, refs[:1], P("paired-all"), seed=1)["p_value"] == verify.test(s, refs[:1], P("paper"), seed=1)["p_value"]
    with pytest.raises(verify.UserError):
        verify.test(s, list(refs[:2]), verify.Protocol("spread", 10, None, 0.01), seed=1)
