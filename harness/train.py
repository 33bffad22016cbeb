"""Entry point: `python -m harness.train key=value ...` (add `-m` for a Hydra multirun).

Returns the final held-out gold pass@1, the value a sweeper maximises.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from harness.config import Config, ConfigError, register_configs, validate, warnings_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at run time
log = logging.getLogger("coldclimb")
register_configs()


def to_config(cfg: DictConfig) -> Config:
    """The typed config, checked value by value; raises ConfigError before anything loads."""
    config = OmegaConf.to_object(cfg)
    validate(config)
    return config


def format_summary(summary: dict) -> str:
    rows = [f"{'stage':<9}{'gold pass@1':>12}{'proxy':>8}{'KL to start':>13}"]
    for stage, metrics in summary.items():
        if "eval/gold_pass@1" in metrics:
            kl = metrics.get("eval/kl_to_initial")
            rows.append(f"{stage:<9}{metrics['eval/gold_pass@1']:>12.3f}{metrics['eval/proxy_reward']:>8.3f}"
                        f"{'' if kl is None else f'{kl:.3f}':>13}")
    return "\n".join(rows)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        config = to_config(cfg)
    except ConfigError as error:
        print(f"coldclimb: config error: {error}", file=sys.stderr)
        sys.exit(2)
    from transformers.utils import logging as hf_logging

    from harness.grpo import NonFiniteLoss
    from harness.pipeline import Pipeline, SeedTooSmall  # heavy imports only once the config is sound

    hf_logging.disable_progress_bar()

    for warning in warnings_for(config):
        log.warning(warning)
    run_dir = Path(config.output_dir or HydraConfig.get().runtime.output_dir)
    try:
        summary = Pipeline(config, run_dir).run()
    except (SeedTooSmall, NonFiniteLoss) as error:
        print(f"coldclimb: {error}", file=sys.stderr)
        sys.exit(1)
    log.info("held-out results\n%s\nrun directory: %s", format_summary(summary), run_dir)
    last = [m for m in summary.values() if "eval/gold_pass@1" in m]
    return last[-1]["eval/gold_pass@1"] if last else float("nan")


if __name__ == "__main__":
    main()
