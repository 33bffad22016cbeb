"""Formulas the trainer logs and the analysis plots, free of torch (reading a sweep needs none).

P_live(p, K) = 1 - p^K - (1 - p)^K: the chance that K samples at pass rate p hold both a success
and a failure, so that the group's advantages are not all zero.
"""


def live_probability(p, num_generations: int):
    """P_live(p, K), for a float or a numpy array of pass rates."""
    return 1 - p**num_generations - (1 - p) ** num_generations
