#!/usr/bin/env bash
# The GPU path in one script (at most about 8 minutes), on a machine with a GPU: one line per check,
# PASS, FAIL or SKIP and why; each check's log in $OUT (or /tmp/gpu_check). Run from the repository root:
#   bash bench/gpu_check.sh
# Where the machine cannot reach a package index, put the wheels of what its Python lacks in .gpuwheels/
# (hydra-core, omegaconf, antlr4-python3-runtime, hydra-joblib-launcher, optuna and its SQLAlchemy, alembic,
# Mako, colorlog, greenlet, Pebble): they are installed first, without their dependencies.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 COLDCLIMB_CACHE=$out/cache
py=${PYTHON:-python3}
if [ -d .gpuwheels ]; then
  $py -m pip install -q --no-index --no-deps --no-build-isolation .gpuwheels/* > "$out/install.log" 2>&1 \
    || { echo "FAIL install: see install.log"; exit 1; }
fi
common="experiment=smoke device=cuda tracking=disabled cache.stages=false"

check() {  # check NAME COMMAND...: PASS with the seconds it took, or FAIL with its log's last line
  local name=$1 start=$SECONDS
  shift
  if "$@" > "$out/$name.log" 2>&1; then
    local said; said=$(grep -h '^RESULT' "$out/$name.log" | tail -1 | cut -c8-)
    echo "PASS $name $((SECONDS - start))s ${said:-$(grep -v '^\s*$' "$out/$name.log" | tail -1 | cut -c1-200)}"
  else
    echo "FAIL $name $((SECONDS - start))s: $(grep -v '^\s*$' "$out/$name.log" | tail -1 | cut -c1-300)"
  fi
}

gold() {  # the final stage's held-out gold pass@1 of a run directory, as RESULT
  $py -c "import json,sys; s=json.load(open(sys.argv[1]+'/status.json')); assert s['status']=='finished', s; \
print('RESULT gold pass@1 %.3f on' % s['eval/gold_pass@1'], __import__('torch').cuda.get_device_name())" "$1"
}

run_on_gpu() {  # run_on_gpu DIR OVERRIDES...: the smoke recipe on the GPU, then its result
  local dir=$1
  shift
  $py -m harness.train $common output_dir="$dir" hydra.run.dir="$dir" "$@" && gold "$dir"
}

two_jobs_on_one_gpu() {  # two trials of an Optuna sweep at once on one GPU (jobs_per_gpu=2), through joblib
  local sweep=$out/jobs_per_gpu
  $py -m harness.train -m $common jobs_per_gpu=2 hydra/launcher=joblib hydra.launcher.n_jobs=2 \
    hydra/sweeper=coldclimb_optuna hydra.sweeper.sampler=grid hydra.sweeper.pruner=none hydra.sweeper.n_jobs=2 \
    hydra.sweeper.n_trials=2 'seed=choice(0,1)' hydra.sweep.dir="$sweep" || return 1
  $py - "$sweep" <<'EOF'
import json, sys
from pathlib import Path
runs = sorted(Path(sys.argv[1]).glob("*/grpo/metrics.jsonl"))
stats = [json.loads(p.parent.parent.joinpath("status.json").read_text()) for p in runs]
assert len(runs) == 2 and all(s["status"] == "finished" for s in stats), stats
spans = [(p.parent.parent / "explore" / "run.json").stat().st_mtime for p in runs]
ends = [p.stat().st_mtime for p in runs]
overlap = min(ends) - max(spans)
assert overlap > 0, f"the two trials did not run at once (overlap {overlap:.1f}s)"
print(f"RESULT 2 trials finished, at once for {overlap:.0f}s on one GPU")
EOF
}

vllm_sync() {  # the vLLM engine on the GPU, its weights synced after an update (check_sync)
  $py -c "import vllm" 2>/dev/null || { echo "vllm is not installed here"; return 2; }
  run_on_gpu "$out/vllm" rollout=vllm "pipeline.stages=[grpo]"
}

$py -c "import torch; assert torch.cuda.is_available(); print('RESULT', torch.cuda.device_count(), 'x', \
torch.cuda.get_device_name(), 'torch', torch.__version__)" > "$out/env.log" 2>&1 \
  && echo "PASS env $(grep '^RESULT' "$out/env.log" | cut -c8-)" || { echo "FAIL env: no CUDA device"; exit 1; }
check smoke_cuda run_on_gpu "$out/smoke"
check bf16 run_on_gpu "$out/bf16" grpo.bf16=true explore.bf16=true
check grpo_options run_on_gpu "$out/options" grpo.beta=0.04 grpo.num_iterations=2 grpo.micro_batch_size=2 \
  grpo.dynamic_sampling=true grpo.soft_overlong_cache=4 grpo.loss_type=grpo grpo.scale_rewards=batch
check learned_reward run_on_gpu "$out/learned" "pipeline.stages=[grpo]" task.reward=learned reward_model.train_size=12 \
  reward_model.steps=2 eval.best_of_n=4
check jobs_per_gpu two_jobs_on_one_gpu
vllm_sync > "$out/vllm.log" 2>&1
case $? in
  0) echo "PASS vllm $(grep -h '^RESULT' "$out/vllm.log" | tail -1 | cut -c8-)" ;;
  2) echo "SKIP vllm: $(tail -1 "$out/vllm.log")" ;;
  *) echo "FAIL vllm: $(grep -v '^\s*$' "$out/vllm.log" | tail -1 | cut -c1-300)" ;;
esac
# Data parallelism: two gloo ranks equal one process (the CPU test, on this machine's torch); FSDP2 on the GPU
# (one NCCL rank); with two GPUs, a 2-rank run under NCCL, DDP and FSDP2.
check data_parallel_gloo $py -m pytest -q -p no:cacheprovider tests/test_distributed.py
check fsdp_one_gpu $py bench/fsdp_gpu.py
if [ "$($py -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  check ranks_ddp run_on_gpu "$out/ranks_ddp" trial.processes=2 rollout.group_seeds=true
  check ranks_fsdp run_on_gpu "$out/ranks_fsdp" trial.processes=2 rollout.group_seeds=true trial.data_parallel=fsdp
else
  echo "SKIP ranks_ddp, ranks_fsdp: one GPU here"
fi
