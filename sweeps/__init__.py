"""Sweep presets (Hydra configs) and the Optuna sweeper: see the sweeps issue."""
