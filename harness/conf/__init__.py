"""The Hydra config tree: one group per concern, mirroring the harness package."""
