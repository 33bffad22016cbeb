"""Rewards: what scores completions (`functions`: the task's own verifier and formula, or a function named
by reference), the worker processes that run them (`pool`, `worker`), and the `Reward` a stage measures
and trains on (`reward`). Light on purpose: every reward worker imports this package."""
