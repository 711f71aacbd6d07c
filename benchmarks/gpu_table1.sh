#!/usr/bin/env bash
# Table 1 on one CUDA GPU in about 10 minutes (issue #12.6): the CUDA tests, an --amp run, then the RTS column
# with the models as parallel processes on the one GPU, at the paper's recipe (lr 0.01, steps at 1/3 and 2/3)
# with the number of steps scaled to what fits.
#
# Usage (from the repository root, on the GPU machine):
#
#     MNIST=/path/to/mnist OUT=results/gpu-table1 benchmarks/gpu_table1.sh
#
# MNIST is a folder with the four MNIST files (train-images-idx3-ubyte...). The paper's budget is 150,000 steps
# of 256 per model; the script first times 300 steps of every model running side by side, then gives each model
# the steps that fit in TRAIN_S seconds (default 330), capped at 150,000, and prints the scaling. It needs a
# python3 with torch (CUDA), tqdm, matplotlib and pytest; stn is run from src/ (no install, as on a machine that
# cannot reach a package registry). Everything it makes goes to $OUT, with the GPU's name in gpu.txt.
#
# A smoke run of the script's own logic on a CPU (no AMP, the CUDA tests skip, tiny data):
#
#     DEVICE=cpu PROBE=4 TRAIN_S=1 MODELS="st-cnn-aff cnn" EXTRA="--num-train 512 --num-test 256" \
#         MNIST=../shared/data/mnist OUT=/tmp/gpu-smoke benchmarks/gpu_table1.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${MNIST:?set MNIST to a folder holding the four MNIST files}
OUT=${OUT:-results/gpu-table1}
TRAIN_S=${TRAIN_S:-330}
MODELS=${MODELS:-cnn st-cnn-aff st-cnn-proj st-cnn-tps fcn st-fcn-aff st-fcn-proj st-fcn-tps}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PROBE=${PROBE:-300}
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
mkdir -p "$OUT"
start=$(date +%s)
elapsed() { echo $(($(date +%s) - start)); }

DEVICE=$DEVICE "$PY" - >"$OUT/gpu.txt" <<'EOF'
import os
import torch
if os.environ["DEVICE"] == "cpu":
    print(f"CPU smoke run (torch {torch.__version__}): not a GPU measurement")
else:
    assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine (DEVICE=cpu: smoke run)"
    print(f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})")
EOF
cat "$OUT/gpu.txt"

echo "== 1. CUDA tests ($(elapsed) s)"
STN_SHARED_DATA="$(dirname "$MNIST")" "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    tests/data/test_datasets.py tests/data/test_distortions.py -k "cuda or device" 2>&1 | tee "$OUT/cuda-tests.txt" ||
    echo "some CUDA tests failed: $OUT/cuda-tests.txt" | tee "$OUT/cuda-tests-failed.txt"

echo "== 2. an --amp run ($(elapsed) s)"
if [[ $DEVICE == cpu ]]; then
    echo "skipped: AMP is CUDA only" | tee "$OUT/amp.txt"
else
    "$PY" -m stn train --data rts --model st-cnn-aff --iterations 2000 --amp --device "$DEVICE" \
        --data-dir "$MNIST" --out "$OUT/amp-st-cnn-aff" --quiet 2>&1 | tee "$OUT/amp.txt"
fi

column() {  # column ITERATIONS FOLDER: every model of the RTS column as its own process, side by side
    local pids=()
    for model in $MODELS; do
        "$PY" -m stn reproduce table1 --data RTS --models "$model" --budget paper --iterations "$1" \
            --device "$DEVICE" --data-dir "$MNIST" --out "$2" --quiet "${EXTRA_ARGS[@]}" >"$2-$model.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    # Every run is finished: this only writes the table of them all (each process wrote one with what it saw).
    "$PY" -m stn reproduce table1 --data RTS --models "${MODELS// /,}" --budget paper --iterations "$1" \
        --device "$DEVICE" --data-dir "$MNIST" --out "$2" --quiet "${EXTRA_ARGS[@]}" >"$2-table.log"
}

echo "== 3. timing $PROBE steps of each model, all side by side ($(elapsed) s)"
probe_start=$(date +%s)
column "$PROBE" "$OUT/probe"
probe_s=$(($(date +%s) - probe_start))
# The probe's wall time includes start-up and evaluation, so the scaled budget errs on the short side.
steps=$("$PY" -c "print(min(150_000, max($PROBE, int($PROBE * $TRAIN_S / max($probe_s, 1)))))")
echo "$PROBE steps took ${probe_s} s with $(echo "$MODELS" | wc -w) models side by side:" \
    "the RTS column gets $steps steps per model (the paper: 150,000)" | tee "$OUT/scaling.txt"

echo "== 4. the RTS column at $steps steps ($(elapsed) s)"
column "$steps" "$OUT/table1"
cat "$OUT/table1/table1.md"
echo "done in $(elapsed) s; everything is in $OUT"
