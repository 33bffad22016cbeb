"""Load what runs store into pandas, and the plots that explain a sweep.

  load      load_sweep(path) -> Sweep(runs, history, best_of_n), from the run store or W&B
  live      live-group theory, measured points, num_generations_for(live_fraction, pass_rate)
  overopt   gold and proxy against sqrt(KL), with the RL and best-of-n fits of Gao et al. 2022
  ablation  final and best metrics against each swept value; learning curves; the cold start
  study     an Optuna sweep: importances, history, intermediate values, slices, the Pareto front
  report    python -m analysis.report SWEEP [--out DIR] [--storage URL]
  compare   python -m analysis.compare SWEEP_A SWEEP_B ...: arm by arm, with Welch's test
"""

from analysis.load import Sweep, from_local, from_wandb_api, from_wandb_offline, load_sweep
from harness.store import load_run

__all__ = ["Sweep", "from_local", "from_wandb_api", "from_wandb_offline", "load_run", "load_sweep"]
