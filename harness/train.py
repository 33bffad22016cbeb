"""Entry point: `python -m harness.train key=value ...` (add `-m` for a Hydra multirun).

Returns, and writes to status.json, the run's status and final held-out metrics: what a
sweeper optimises.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness.config import Config, register_configs
from harness.distributed import is_writer, rank, world_size
from harness.settings import ConfigError
from harness.store import CONFIG, GOLD, KL, PROXY, STATUS, write_json
from harness.validation import validate, warnings_for
from harness.resume import check_resumable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at run time
log = logging.getLogger("coldclimb")
register_configs()


def to_config(cfg: DictConfig) -> Config:
    """The typed config, checked value by value; raises ConfigError before anything loads."""
    config = OmegaConf.to_object(cfg)
    validate(config)
    # recorded as it will run; ranks started here share this process's CPUs (a SLURM task has its own)
    sharing = 1 if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" else config.trial.processes
    config.threads = config.threads or max(1, len(os.sched_getaffinity(0)) // sharing)
    return config


def format_summary(summary: dict) -> str:
    rows = [f"{'stage':<9}{'gold pass@1':>12}{'proxy':>8}{'KL to start':>13}"]
    for stage, metrics in summary.items():
        if GOLD in metrics:
            kl = metrics.get(KL)
            rows.append(f"{stage:<9}{metrics[GOLD]:>12.3f}{metrics[PROXY]:>8.3f}"
                        f"{'' if kl is None else f'{kl:.3f}':>13}")
    return "\n".join(rows)


def in_sweep() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def finish(run_dir: Path, status: str, **details) -> dict:
    """status.json beside the run's results (finished, failed or pruned, and the final held-out
    metrics or the reason); it is also what the run returns to a sweeper."""
    record = {"status": status, **details}
    if is_writer():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / STATUS, record)
    return record


def fail(run_dir: Path, message: str, exit_code: int) -> dict:
    """A failed run says why in one line. Alone, it exits; in a sweep, the sweep goes on."""
    record = finish(run_dir, "failed", error=message)
    print(f"coldclimb: {message}", file=sys.stderr)
    if not in_sweep():
        sys.exit(exit_code)
    return record


def name_run(config: Config, run_dir: Path) -> None:
    """Alone, a run is named after its directory; in a sweep, a trial is <sweep>-<its subdirectory>
    (the job's number, unless a sweep grown later put it in a subdirectory of its own: sweeps.resolve),
    and every trial's stages are grouped under the sweep in W&B."""
    hydra_cfg = HydraConfig.get()
    if in_sweep():
        sweep = Path(hydra_cfg.sweep.dir).name
        config.run_name = config.run_name or f"{sweep}-{Path(hydra_cfg.runtime.output_dir).name}"
        config.tracking.group = config.tracking.group or sweep
    else:
        config.run_name = config.run_name or run_dir.name


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.output_dir or HydraConfig.get().runtime.output_dir)
    try:
        config = to_config(cfg)
        name_run(config, run_dir)
        # A sweep resumed in its directory (hydra.sweep.dir=... resume=true) starts afresh the jobs
        # that never began; a single run with nothing to resume names the wrong directory.
        if config.resume and (not in_sweep() or any(run_dir.glob(f"*/{CONFIG}"))):
            check_resumable(config, run_dir)
    except ConfigError as error:
        return fail(run_dir, f"config error: {error}", exit_code=2)
    if config.trial.processes > 1:
        return run_ranks(config, run_dir)
    if config.device != "cuda":
        return run(config, run_dir)
    from harness.gpus import claim_gpu, release_gpu

    try:
        claim_gpu(config.jobs_per_gpu)  # before any import can initialise CUDA
    except RuntimeError as error:
        return fail(run_dir, str(error), exit_code=2)
    try:
        return run(config, run_dir)
    finally:  # the next job (in this process or another) may take the place
        release_gpu()


def run_ranks(config: Config, run_dir: Path) -> dict:
    """The recipe on trial.processes ranks (harness.launch): this process is one of a SLURM job's tasks, or it
    launches the ranks here and waits for them."""
    from harness.launch import RankFailed, launch, process_group, slurm_ranks

    def launched(config: Config, run_dir: Path, on_eval) -> dict:  # rank 0 reports to the trial, this process beats
        try:
            return launch(config, run_dir)
        except RankFailed as error:
            return fail(run_dir, str(error), exit_code=1)
    try:
        if not slurm_ranks(config.trial.processes):
            return run(config, run_dir, execute=launched)
    except RankFailed as error:
        return fail(run_dir, str(error), exit_code=2)
    with process_group(config.device):
        return slurm_rank(config, run_dir)


def slurm_rank(config: Config, run_dir: Path) -> dict:
    """One task of a SLURM job whose tasks are the run's ranks. A rank that cannot go on must not end well, as
    Hydra would end it after an error, while its peers wait on it: it exits non-zero, and srun's kill-on-bad-exit
    (the launcher presets) ends them. On an error, rank 0 first fails the run and its trial, in one line."""
    from harness.faults import TrialSuperseded
    from harness.launch import lost_peer

    try:
        record = run(config, run_dir)
    except TrialSuperseded as error:  # rank 0's run() returns it as a record
        record = {"status": "superseded", "error": str(error)}
    except Exception as error:
        log.exception("rank %d failed", rank())
        if is_writer() and not lost_peer(error):  # a peer that died ends the job: the sweeper retries it
            record = fail(run_dir, f"{type(error).__name__}: {error}", exit_code=1)
            if config.trial.trial_id is not None:
                from sweeps.trial import TrialReporter

                TrialReporter(config.trial).finish(record, run_dir)
        os._exit(1)
    if record["status"] == "superseded":  # its retry owns the run; a peer may be waiting on this rank
        os._exit(1)
    return record


def run(config: Config, run_dir: Path, execute=None) -> dict:
    """The recipe, on a sound config (`execute`: how; run_recipe in this process); its status.json record. A
    trial of an Optuna sweep beats to its study while it runs and tells it the outcome itself, whether or not its
    sweeper lives: rank 0 does, where there are several."""
    execute = execute or run_recipe
    if config.trial.trial_id is None or not is_writer():
        return execute(config, run_dir, on_eval=None)
    from harness.faults import TrialSuperseded
    from sweeps.trial import TrialReporter

    try:
        with TrialReporter(config.trial) as trial:
            record = execute(config, run_dir, on_eval=trial)
            try:
                trial.finish(record, run_dir)
            except Exception:  # its sweeper, if alive, tells it from the record returned
                log.exception("could not tell the study trial %s's outcome", config.trial.number)
    except TrialSuperseded as error:
        log.warning("%s", error)
        return {"status": "superseded", "error": str(error)}
    return record


def run_recipe(config: Config, run_dir: Path, on_eval) -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    from harness.faults import NonFiniteLoss, TrialStopped, TrialSuperseded
    from harness.pipeline import Pipeline, SeedTooSmall  # heavy imports only once the config is sound
    from harness.rewards.pool import RewardFailed

    hf_logging.disable_progress_bar()
    for warning in warnings_for(config) if is_writer() else []:
        log.warning(warning)
    if is_writer():
        (run_dir / STATUS).unlink(missing_ok=True)  # running: a status of an earlier run here would mislead
    try:
        pipeline = Pipeline(config, run_dir, on_eval=on_eval)
        summary = pipeline.run()
    except TrialStopped as error:  # raised by pipeline.run: `pipeline` is there
        log.info("%s", error)
        return finish(run_dir, "pruned", reason=str(error), **pipeline.cost)
    except TrialSuperseded:
        raise  # its retry owns the run directory now: nothing is written there
    except (SeedTooSmall, NonFiniteLoss, RewardFailed) as error:
        if world_size() > 1:
            raise  # one rank's failure: its exit stops every rank (harness.launch)
        return fail(run_dir, str(error), exit_code=1)
    except Exception as error:
        if world_size() > 1 or not in_sweep():
            raise  # a bug in a single run: the traceback helps more than a line
        log.exception("run failed")
        return fail(run_dir, f"{type(error).__name__}: {error}", exit_code=1)
    evaluated = [m for m in summary.values() if GOLD in m]
    log.info("held-out results\n%s\nrun directory: %s", format_summary(summary), run_dir)
    # The CPU threads the run's kernels used, as run (a launcher may limit them): the numbers depend on it.
    return finish(run_dir, "finished", **(evaluated[-1] if evaluated else {}), **pipeline.cost,
                  threads_used=torch.get_num_threads())


if __name__ == "__main__":
    main()
