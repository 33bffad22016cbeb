"""Seeds until resolved: the plan's alpha shares, and the sequential stop on simulated sweeps."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from analysis.contrast import paired
from analysis.sequential import SPENDING, Plan, sequential
from tests.test_contrast import WORLDS, _simulated_sweeps, _true_difference


def test_the_nominal_levels_spend_alpha_as_planned_and_the_plan_is_checked():
    """One look is a plain test at alpha; more looks each test below alpha, the first at the spending
    function's share exactly, later ones above their share (the looks are correlated), and in fresh
    simulated null sweeps the chance that a look's t-test on its seeds ever crosses is alpha."""
    assert Plan(4, 4, 1).looks() == [4] and Plan(4, 4, 1).nominal(0) == pytest.approx(0.05, rel=1e-3)
    assert Plan(3, 10, 4).looks() == [3, 7, 10]
    for spending in SPENDING:
        plan = Plan(first_seeds=3, max_seeds=12, batch=3, spending=spending)
        levels = [plan.nominal(k) for k in range(4)]
        assert levels[0] == pytest.approx(plan.spent(3), rel=0.02) and all(0 < x < 0.05 for x in levels)
        shares = np.diff([0, *(plan.spent(n) for n in plan.looks())])
        assert all(level > share for level, share in zip(levels[1:], shares[1:]))
        seeds = np.random.default_rng(9).standard_normal((200_000, 12))  # fresh null sweeps: t-tests at each look
        p = np.stack([stats.ttest_1samp(seeds[:, :n], 0, axis=1).pvalue for n in plan.looks()], axis=1)
        crossed = (p <= np.array(levels)).any(1).mean()
        assert crossed == pytest.approx(0.05, abs=0.002), crossed
    assert Plan(3, 12, 3, spending="obrien_fleming").nominal(0) < 1e-3 < Plan(3, 12, 3, spending="pocock").nominal(0)
    with pytest.raises(ValueError, match="spending='bonferroni'"):
        Plan(3, 12, 3, spending="bonferroni")
    with pytest.raises(ValueError, match="first 1"):
        Plan(1, 12, 3)


def _contrasts(a, *others):
    """contrasts_at over one simulated sweep: each other arm against a, on the first `seeds` seeds."""
    def at(seeds, confidence):
        return pd.DataFrame([{"contrast": f"{k} - a", **paired(a[:seeds], b[:seeds], confidence, power=False)}
                             for k, b in enumerate(others)])
    return at


SIMS = 600  # null sweeps; sweeps with an effect: half as many


def test_a_plan_stopped_early_settles_every_open_contrast_at_that_look_and_adds_no_seed():
    plan, asked = Plan(first_seeds=3, max_seeds=9, batch=3, contrasts=("b - a", "c - a")), []

    def contrasts_at(seeds, confidence):
        return pd.DataFrame({"contrast": ["b - a", "c - a"], "p": [1e-6, 0.2], "seeds": [seeds] * 2})

    result = sequential(plan, contrasts_at, asked.append, stop_at=1).set_index("contrast")
    assert not asked and result.look.tolist() == [1, 1] and result.verdict.tolist() == ["resolved", "not resolved"]
    assert result.level.iloc[0] == pytest.approx(plan.nominal(0))  # the first look's level, not a plain 0.05
    assert len(sequential(plan, contrasts_at, asked.append)) == 2 and asked == [6, 9]  # unstopped: every look


@pytest.mark.slow  # 900 simulated sequential sweeps: about 25 s
@pytest.mark.parametrize("world", sorted(WORLDS))
def test_adding_seeds_until_resolved_rarely_resolves_no_effect_and_its_interval_covers(world):
    """Looks at 3, 6, 9 and 12 seeds. With no effect, a sequential sweep ends with a false verdict at
    most 5% of the time (give or take the simulation's error), where testing every look at 5% does
    not. With an effect, the interval reported at the look that settled it covers the truth, and the
    plan resolves more sweeps than 3 seeds alone would."""
    rng, spread, plan = np.random.default_rng(3), WORLDS[world], Plan(first_seeds=3, max_seeds=12, batch=3)
    a, b = _simulated_sweeps(SIMS, 12, 0.0, rng, **spread)
    stops = [sequential(plan, _contrasts(x, y)).iloc[0] for x, y in zip(a, b)]
    false = np.mean([s.verdict == "resolved" for s in stops])
    assert false <= 0.05 + 1.96 * math.sqrt(0.05 * 0.95 / SIMS), false
    naive = np.mean([any(paired(x[:n], y[:n], power=False)["p"] < 0.05 for n in plan.looks()) for x, y in zip(a, b)])
    assert naive > 0.065, naive  # the peeking it guards against
    truth = _true_difference(0.4, rng, **spread)
    a, b = _simulated_sweeps(SIMS // 2, 12, 0.4, rng, **spread)
    stops = pd.DataFrame([sequential(plan, _contrasts(x, y)).iloc[0] for x, y in zip(a, b)])
    covered = ((stops.low <= truth) & (truth <= stops.high)).mean()
    assert covered >= 0.93, covered
    fixed = np.mean([paired(x[:3], y[:3], power=False)["p"] < 0.05 for x, y in zip(a, b)])
    assert (stops.verdict == "resolved").mean() > fixed
    assert set(stops.seeds_added_to) <= {3, 6, 9, 12} and stops.seeds_added_to.nunique() > 1  # some stop early


@pytest.mark.slow  # 800 simulated sweeps of three contrasts: about 20 s
def test_a_family_of_null_contrasts_rarely_gets_any_false_verdict():
    """Three arms against one base, none different: Holm's step-down at the looks' levels keeps the
    chance of any false verdict in the family at 5% (a contrast left unresolved keeps its share)."""
    rng, sims = np.random.default_rng(11), 800
    base = rng.normal(-0.5, 1.5, size=(sims, 1, 100)) + rng.normal(0, 0.5, size=(sims, 12, 1))
    arms = [rng.binomial(2, special.expit(base + rng.normal(0, 0.4, size=(sims, 12, 1)))) / 2 for _ in range(4)]
    plan = Plan(first_seeds=3, max_seeds=12, batch=3)
    any_false = np.mean([(sequential(plan, _contrasts(*(arm[i] for arm in arms))).verdict == "resolved").any()
                         for i in range(sims)])
    assert any_false <= 0.05 + 1.96 * math.sqrt(0.05 * 0.95 / sims), any_false


def test_the_sweep_grows_only_while_a_contrast_is_open():
    """Seeds are added look by look, and not once every contrast is settled."""
    rng = np.random.default_rng(0)
    big = np.zeros((12, 50)), np.ones((12, 50)) * 0.5 + rng.normal(0, 0.01, (12, 50))
    added = []
    result = sequential(Plan(3, 12, 3), _contrasts(*big), added.append)
    assert result.holm_level.iloc[0] == result.level.iloc[0]  # a family of one
    assert added == [] and result.verdict.iloc[0] == "resolved" and result.look.iloc[0] == 1
    a, b = _simulated_sweeps(1, 12, 0.0, rng)
    result = sequential(Plan(3, 12, 3), _contrasts(a[0], b[0]), added.append)
    assert added == [6, 9, 12][:result.look.iloc[0] - 1]
    assert result.level.iloc[0] == Plan(3, 12, 3).nominal(result.look.iloc[0] - 1)
