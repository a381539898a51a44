"""vlaworld.eval.stats against statsmodels/scipy references, published values and simulation."""

import math

import numpy as np
import pytest

from vlaworld.eval import stats

sm_prop = pytest.importorskip("statsmodels.stats.proportion")
sm_tables = pytest.importorskip("statsmodels.stats.contingency_tables")
sm_multi = pytest.importorskip("statsmodels.stats.multitest")


def _count_pairs(rng, n_max):
    n = int(rng.integers(1, n_max))
    return int(rng.integers(0, n + 1)), n


def test_z_value():
    assert stats.z_value(0.95) == pytest.approx(1.959963984540054, abs=1e-12)
    with pytest.raises(ValueError, match="confidence"):
        stats.z_value(1.0)


def test_wilson_matches_statsmodels_on_random_and_edge_counts():
    rng = np.random.default_rng(0)
    cases = [_count_pairs(rng, 3000) for _ in range(400)]
    cases += [(0, n) for n in (1, 2, 10, 50, 200, 2000)] + [(n, n) for n in (1, 2, 10, 50, 200, 2000)]
    cases += [(1, 2), (100, 200), (1, 2000), (1999, 2000)]
    for k, n in cases:
        for conf in (0.95, 0.9, 0.99):
            ref = sm_prop.proportion_confint(k, n, alpha=1 - conf, method="wilson")
            got = stats.wilson_interval(k, n, confidence=conf)
            assert got == pytest.approx(ref, abs=1e-12), (k, n, conf)
            assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_edges_and_published_table():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    assert stats.wilson_interval(0, 10)[0] == 0.0 and stats.wilson_interval(10, 10)[1] == 1.0
    # users_and_perf.md §3c
    for (k, n), (lo, hi) in {(9, 10): (59.6, 98.2), (45, 50): (78.6, 95.7), (160, 200): (73.9, 85.0),
                             (180, 200): (85.1, 93.4), (1600, 2000): (78.2, 81.7)}.items():
        got = stats.wilson_interval(k, n)
        assert (round(100 * got[0], 1), round(100 * got[1], 1)) == (lo, hi)
    with pytest.raises(ValueError, match="successes <= n"):
        stats.wilson_interval(5, 4)


def test_mcnemar_exact_matches_statsmodels():
    rng = np.random.default_rng(1)
    cases = [(int(rng.integers(0, 300)), int(rng.integers(0, 300))) for _ in range(300)]
    cases += [(0, 0), (0, 1), (1, 0), (5, 5), (0, 25), (1000, 900), (40, 0), (7, 8)]
    for b, c in cases:
        ref = sm_tables.mcnemar([[10, b], [c, 10]], exact=True).pvalue
        assert stats.mcnemar_exact(b, c) == pytest.approx(ref, rel=1e-9, abs=1e-300), (b, c)


def test_mcnemar_edges():
    assert stats.mcnemar_exact(0, 0) == 1.0  # no discordant pairs: no evidence
    assert stats.mcnemar_exact(3, 3) == 1.0
    assert stats.mcnemar_exact(3, 0) == pytest.approx(0.25)  # 2 * (1/2)**3
    assert stats.mcnemar_exact(0, 2000) >= 0.0  # exact integers: no overflow or NaN
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 2)


def test_holm_and_bh_match_statsmodels():
    rng = np.random.default_rng(2)
    for m in (1, 2, 4, 7, 40):
        for _ in range(6):  # statsmodels' holm takes ~40 ms a call
            p = rng.random(m) ** 3
            if m > 2:
                p[1] = p[0]  # ties
                p[-1] = 1.0
            holm_ref = sm_multi.multipletests(p, method="holm")[1]
            bh_ref = sm_multi.multipletests(p, method="fdr_bh")[1]
            assert stats.holm(list(p)) == pytest.approx(list(holm_ref), abs=1e-12)
            assert stats.benjamini_hochberg(list(p)) == pytest.approx(list(bh_ref), abs=1e-12)
    assert stats.holm([]) == [] and stats.benjamini_hochberg([]) == []


def test_paired_counts():
    t = stats.paired_counts([1, 1, 0, 0, 1], [1, 0, 1, 0, 0])
    assert (t.both, t.only_a, t.only_b, t.neither, t.n) == (1, 2, 1, 1, 5)
    assert t.diff == pytest.approx(0.2)
    with pytest.raises(ValueError, match="aligned"):
        stats.paired_counts([1, 0], [1])


def test_newcombe_published_example():
    # Fagerland, Lydersen & Laake (2017) ch. 8, Cavo et al. (2012): estimate -0.0621 (-0.1186 to -0.0046)
    t = stats.Paired(both=59, only_a=6, only_b=16, neither=80)
    lo, hi = stats.newcombe_paired_interval(t)
    assert t.diff == pytest.approx(-0.0621, abs=5e-5)
    assert (round(lo, 4), round(hi, 4)) == (-0.1186, -0.0046)


def _newcombe_reference(t: stats.Paired, conf: float = 0.95) -> tuple[float, float]:
    """Method 10 written out independently, on statsmodels' Wilson intervals."""
    n = t.n
    r1, r2 = t.both + t.only_a, t.both + t.only_b
    p1, p2 = r1 / n, r2 / n
    l1, u1 = sm_prop.proportion_confint(r1, n, alpha=1 - conf, method="wilson")
    l2, u2 = sm_prop.proportion_confint(r2, n, alpha=1 - conf, method="wilson")
    if 0 in (r1, n - r1, r2, n - r2):
        phi = 0.0
    else:
        a = t.both * t.neither - t.only_a * t.only_b
        a = a - n / 2 if a > n / 2 else (0.0 if a >= 0 else a)
        phi = a / math.sqrt(r1 * (n - r1) * r2 * (n - r2))
    lo = (p1 - p2) - math.sqrt(max(0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)))
    hi = (p1 - p2) + math.sqrt(max(0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)))
    return lo, hi


def test_newcombe_random_tables_and_edges():
    rng = np.random.default_rng(3)
    for _ in range(300):
        cells = rng.integers(0, 60, size=4)
        if cells.sum() == 0:
            continue
        t = stats.Paired(both=int(cells[0]), only_a=int(cells[1]), only_b=int(cells[2]), neither=int(cells[3]))
        lo, hi = stats.newcombe_paired_interval(t)
        assert (lo, hi) == pytest.approx(_newcombe_reference(t), abs=1e-12)
        assert -1.0 <= lo <= t.diff <= hi <= 1.0
    for t in (stats.Paired(both=200, only_a=0, only_b=0, neither=0),
              stats.Paired(both=0, only_a=0, only_b=0, neither=200),
              stats.Paired(both=120, only_a=0, only_b=0, neither=80)):
        lo, hi = stats.newcombe_paired_interval(t)
        assert lo < 0.0 < hi  # no discordant pairs: zero difference, but not a zero-width interval
    assert stats.newcombe_paired_interval(stats.Paired(both=0, only_a=0, only_b=0, neither=0)) == (-1.0, 1.0)
    lo, hi = stats.newcombe_paired_interval(stats.Paired(both=0, only_a=50, only_b=0, neither=0))
    assert hi == 1.0 and lo > 0.8


def _clustered(rng, tasks=10, states=50, reps=4, shift=0.0):
    """Outcomes where the init state drives success: repeats of one state are correlated."""
    p_state = rng.beta(4, 1.5, size=(tasks, states))
    p = np.repeat(p_state, reps, axis=1).ravel()
    a = rng.random(p.size) < np.clip(p + shift, 0, 1)
    b = rng.random(p.size) < p
    strata = np.repeat(np.arange(tasks), states * reps)
    clusters = np.tile(np.repeat(np.arange(states), reps), tasks)
    return a, b, strata, clusters


def test_bootstrap_is_deterministic_given_seed():
    a, b, st, cl = _clustered(np.random.default_rng(4))
    one = stats.cluster_bootstrap_diff(a, b, strata=st, clusters=cl, n_resamples=500, seed=7)
    two = stats.cluster_bootstrap_diff(a, b, strata=st, clusters=cl, n_resamples=500, seed=7)
    other = stats.cluster_bootstrap_diff(a, b, strata=st, clusters=cl, n_resamples=500, seed=8)
    assert one == two and one != other
    diff = a.mean() - b.mean()
    assert one[0] < diff < one[1]
    # the same pairs given in another order resample the same clusters: same interval
    perm = np.random.default_rng(5).permutation(a.size)
    assert stats.cluster_bootstrap_diff(a[perm], b[perm], strata=st[perm], clusters=cl[perm],
                                        n_resamples=500, seed=7) == pytest.approx(one)


def test_bootstrap_counts_repeated_init_states_once():
    """Copying every episode 4x (as 200 episodes over 50 init states do) must not narrow the interval."""
    rng = np.random.default_rng(6)
    a = rng.random(500) < 0.8
    b = rng.random(500) < 0.7
    st = np.repeat(np.arange(10), 50)
    cl = np.tile(np.arange(50), 10)
    single = stats.cluster_bootstrap_diff(a, b, strata=st, clusters=cl, n_resamples=2000, seed=0)
    rep = lambda x: np.repeat(x, 4)  # noqa: E731
    repeated = stats.cluster_bootstrap_diff(rep(a), rep(b), strata=rep(st), clusters=rep(cl), n_resamples=2000, seed=0)
    assert repeated == pytest.approx(single)
    naive = stats.cluster_bootstrap_diff(rep(a), rep(b), strata=rep(st), clusters=np.arange(2000),
                                         n_resamples=2000, seed=0)
    assert naive[1] - naive[0] < 0.6 * (repeated[1] - repeated[0])


def test_bootstrap_coverage_sanity():
    """Over simulated clustered data with a known true difference, the 95 % interval covers it ~95 % of the time."""
    rng = np.random.default_rng(9)
    true = 0.05
    covered = 0
    sims = 150
    for _ in range(sims):
        tasks, states, reps = 5, 20, 4
        p_state = rng.beta(4, 1.5, size=(tasks, states))
        p = np.repeat(p_state, reps, axis=1).ravel()
        # a shares b's state-level propensity plus a constant shift: true diff = mean(p_a) - mean(p_b)
        pa = np.clip(p + true, 0, 1)
        target = pa.mean() - p.mean()
        a = rng.random(p.size) < pa
        b = rng.random(p.size) < p
        st = np.repeat(np.arange(tasks), states * reps)
        cl = np.tile(np.repeat(np.arange(states), reps), tasks)
        lo, hi = stats.cluster_bootstrap_diff(a, b, strata=st, clusters=cl, n_resamples=400, seed=0)
        covered += lo <= target <= hi
    assert 0.85 <= covered / sims <= 1.0


def test_bootstrap_input_checks():
    with pytest.raises(ValueError, match="aligned"):
        stats.cluster_bootstrap_diff([1, 0], [1, 0], strata=[0], clusters=[0, 1])
    assert stats.cluster_bootstrap_diff([], [], strata=[], clusters=[]) == (-1.0, 1.0)


def test_paired_mde():
    small = stats.paired_mde(stats.Paired(both=150, only_a=15, only_b=15, neither=20))
    large = stats.paired_mde(stats.Paired(both=1500, only_a=150, only_b=150, neither=200))
    assert large < small
    assert large == pytest.approx((1.959964 + 0.841621) * math.sqrt(0.15 / 2000), rel=1e-5)
    assert 0 < stats.paired_mde(stats.Paired(both=100, only_a=0, only_b=0, neither=100)) < 0.05


def test_newcombe_unpaired_matches_statsmodels_and_the_published_example():
    assert stats.newcombe_unpaired_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    rng = np.random.default_rng(11)
    for _ in range(200):
        s1, n1 = _count_pairs(rng, 120)
        s2, n2 = _count_pairs(rng, 120)
        ref = sm_prop.confint_proportions_2indep(s1, n1, s2, n2, method="newcomb", compare="diff")
        assert stats.newcombe_unpaired_interval(s1, n1, s2, n2) == pytest.approx(tuple(map(float, ref)), abs=1e-12)
    assert stats.newcombe_unpaired_interval(3, 0, 1, 4) == (-1.0, 1.0)


def test_bootstrap_mean_of_per_episode_values():
    """The diff interval is the mean interval of the per-pair differences; means resample init states too."""
    a, b, st, cl = _clustered(np.random.default_rng(12))
    delta = a.astype(float) - b.astype(float)
    assert stats.cluster_bootstrap_mean(delta, strata=st, clusters=cl, n_resamples=300, seed=3) == pytest.approx(
        stats.cluster_bootstrap_diff(a, b, strata=st, clusters=cl, n_resamples=300, seed=3))
    rng = np.random.default_rng(13)
    values = rng.normal(0.7, 0.1, 400)
    lo, hi = stats.cluster_bootstrap_mean(values, strata=np.repeat([0, 1], 200), clusters=np.tile(np.arange(50), 8))
    assert lo < values.mean() < hi and hi - lo < 0.05
    # one cluster holding every episode: nothing to resample, the interval collapses to the mean
    assert stats.cluster_bootstrap_mean([0.2, 0.4], strata=[0, 0], clusters=[1, 1]) == pytest.approx((0.3, 0.3))
    with pytest.raises(ValueError, match="finite"):
        stats.cluster_bootstrap_mean([0.1, float("nan")], strata=[0, 0], clusters=[0, 1])
    assert stats.cluster_bootstrap_mean([], strata=[], clusters=[]) == (-math.inf, math.inf)
