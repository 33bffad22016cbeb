"""The best-of-n baseline: its KL from the proxy's levels in the samples (log n - (n-1)/n only bounds it when the
proxy has ties), and a cut of the bigger runs to N samples per problem that does not depend on the proxy."""

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis import overopt


def _samples(proxy, problem=0, run="a"):
    """One problem's samples in drawn order; gold is left at 0, as the KL ignores it."""
    return pd.DataFrame({"run": run, "problem": problem, "proxy": np.asarray(proxy, dtype=float), "gold": 0.0})


def test_the_closed_form_is_the_kl_for_a_continuous_proxy():
    assert overopt.kl_best_of_n_bound(1) == 0
    assert overopt.kl_best_of_n_bound(2) == pytest.approx(np.log(2) - 0.5)
    assert overopt.kl_best_of_n_bound(64) == pytest.approx(np.log(64) - 63 / 64)


@pytest.mark.parametrize("N", [8, 4096])
def test_distinct_proxy_values_give_n_equally_likely_levels_and_approach_the_closed_form(N):
    n = 4
    curve = overopt.best_of_n(_samples(np.random.default_rng(0).permutation(N)), ns=[1, n]).set_index("n")
    j = np.arange(1, N + 1)
    q = (j / N) ** n - ((j - 1) / N) ** n  # the pick's level when each of the N levels has probability 1/N
    assert curve.kl[n] == pytest.approx(q @ np.log(q * N), rel=1e-9)
    assert curve.kl[n] < overopt.kl_best_of_n_bound(n)
    assert curve.kl[n] == pytest.approx(overopt.kl_best_of_n_bound(n), rel=0.03 if N == 8 else 1e-4)
    assert curve.kl[1] == 0 and curve.d[n] == pytest.approx(np.sqrt(curve.kl[n]))


def test_a_proxy_tied_at_its_top_level_nine_times_in_ten_gives_a_small_kl_at_n_64():
    curve = overopt.best_of_n(_samples([1.0] * 90 + [0.0] * 10)).set_index("n")  # the default ns, numpy integers
    assert curve.index.tolist() == [1, 2, 4, 8, 16, 32, 64] and np.isfinite(curve.kl).all()
    q_low = 0.1**64
    by_hand = (1 - q_low) * np.log((1 - q_low) / 0.9) + q_low * np.log(q_low / 0.1)
    assert by_hand == pytest.approx(np.log(1 / 0.9), rel=1e-12)
    assert curve.kl[64] == pytest.approx(by_hand, rel=1e-12)
    assert curve.d[64] == pytest.approx(np.sqrt(by_hand), rel=1e-12)
    assert curve.kl_bound[64] == pytest.approx(np.log(64) - 63 / 64)  # 3.17 nats, thirty times too far out


def test_a_problem_whose_samples_share_one_proxy_value_has_no_kl_at_any_n():
    curve = overopt.best_of_n(_samples([0.5] * 8))
    assert curve.n.tolist() == [1, 2, 4, 8]
    assert curve.kl.tolist() == [0.0] * 4 and curve.d.tolist() == [0.0] * 4


def test_the_kl_is_the_mean_over_problems_of_the_pick_enumerated_over_every_draw_of_n():
    rng = np.random.default_rng(0)
    N, ns = 5, [1, 2, 3, 5]
    problems = [rng.choice([0.25, 0.5, 1.0], N) for _ in range(3)] + [np.full(N, 0.5)]  # ties, and one level only
    samples = pd.concat([_samples(proxy, problem=i) for i, proxy in enumerate(problems)], ignore_index=True)
    curve = overopt.best_of_n(samples, ns=ns).set_index("n")
    for n in ns:
        kls = []
        for proxy in problems:
            levels, counts = np.unique(proxy, return_counts=True)
            picked = np.zeros(len(levels))
            for draw in itertools.product(range(N), repeat=n):  # n i.i.d. draws from the N samples
                picked[np.searchsorted(levels, proxy[list(draw)].max())] += 1  # any tie-break stays on the level
            q, p = picked / N**n, counts / N
            kls.append(sum(q_j * np.log(q_j / p_j) for q_j, p_j in zip(q, p) if q_j > 0))
        assert curve.kl[n] == pytest.approx(np.mean(kls), abs=1e-12)
    assert (curve.kl >= 0).all() and curve.d.notna().all()  # rounding must not push n = 1 below 0


def test_runs_with_more_samples_are_cut_to_their_first_draws_not_their_lowest_proxies():
    rng = np.random.default_rng(0)
    small = [_samples(rng.choice([0.0, 0.5, 1.0], 4), problem=i, run="small") for i in range(2)]
    # the bigger run drew its high proxies first: keeping its 4 lowest would keep only the last 4 draws
    big = [_samples([1.0, 0.5, 1.0, 0.75, 0.0, 0.25, 0.0, 0.25], problem=i, run="big") for i in range(2)]
    samples = pd.concat(small + big, ignore_index=True).assign(gold=lambda s: rng.random(len(s)))
    first_draws = samples.groupby(["run", "problem"]).head(4)
    curve = overopt.best_of_n(samples)
    pd.testing.assert_frame_equal(curve, overopt.best_of_n(first_draws))
    assert curve.n.tolist() == [1, 2, 4] and curve.proxy[0] == pytest.approx(first_draws.proxy.mean())
