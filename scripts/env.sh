# Sourced by scripts/*.sh: create .venv and install nara with its test extras when needed.
# torch is pinned to the CPU build that lies on this machine's disk; on a GPU machine, install your
# own CUDA torch into .venv first and this step keeps it (2.2 <= torch satisfies nara).
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=.venv/.nara-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".[test]"
  touch "$stamp"
fi
export TOKENIZERS_PARALLELISM=false
