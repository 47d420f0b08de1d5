#!/usr/bin/env bash
# GPU check for ntksearch: on a machine with an NVIDIA GPU and jax's CUDA build, confirm jax sees the GPU,
# run the NTK estimator benchmark (quick settings) and a short search, and print the tables. About 5 minutes.
#
#   benchmarks/gpu_check.sh [OUT_DIR]          # results land in OUT_DIR (default benchmarks/results/gpu)
#
# Needs: jax with CUDA (pip install "jax[cuda13]"), flax, optax, numpy, pandas, pyyaml, scipy, scikit-learn.
# The search step also needs optuna; where it is missing and wheels lie in ./.whl (pip download ... -d .whl),
# they are installed into a temporary target first; otherwise the search step is skipped and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$py" -c 'import jax; d = jax.devices(); print("jax", jax.__version__, d); assert d[0].platform == "gpu", "jax sees no GPU"'

echo "== NTK estimators (quick) =="
"$py" benchmarks/ntk_estimators.py --quick --out "$out"

echo "== short search =="
if ! "$py" -c 'import optuna' 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --target /tmp/ntksearch-site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/ntksearch-site"
fi
if "$py" -c 'import optuna' 2>/dev/null; then
    start=$(date +%s)
    "$py" -m ntksearch.cli run experiments/quickstart.yaml --n-trials 40 --no-confirm --storage "sqlite:///$out/study.db" \
        --quiet 2>&1 | tail -n 25
    echo "search: 40 candidates in $(( $(date +%s) - start )) s"
else
    echo "search skipped: optuna is not installed on this machine"
fi
