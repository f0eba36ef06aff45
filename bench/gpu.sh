#!/usr/bin/env bash
# The GPU benchmark, as one prepared call for whenever a GPU machine is lent:
#   bash bench/gpu.sh            (writes into $OUT, or bench-gpu-out/)
# 1. correctness: the fused CUDA kernels against the float64 CPU formula, fp32 and bf16,
#    and how many device kernels each direction launches (the target is one each way);
# 2. timings: activations at 4M and 256M values (fp32, bf16) with the copy bandwidth,
#    the input pipeline and activation epochs, seconds per epoch per model, packed seeds
#    against one after another (mlp4 with 10 seeds, lenet5, convpool; the peak memory of
#    a pack against one run's), and the device-hours of configs/paper.yaml from measured
#    step times (its repeats timed as packs).
# Every step writes its JSON under $OUT; a failed step is reported and the rest still run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-gpu-out}
mkdir -p "$OUT"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
BRU=("$PY" -m bru_core)
failed=0

step() {  # step NAME COMMAND...: run, keep stdout in $OUT/NAME.txt, the JSON line in $OUT/NAME.json
    local name=$1
    shift
    echo "== $name: $*"
    local started=$SECONDS
    if "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"; then
        tail -n 1 "$OUT/$name.txt" >"$OUT/$name.json"
        echo "   ok in $((SECONDS - started)) s"
    else
        echo "   FAILED (exit $?) in $((SECONDS - started)) s; last lines of $OUT/$name.err:"
        tail -n 5 "$OUT/$name.err"
        failed=1
    fi
}

{ nvidia-smi || true; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; } >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
step check "$PY" bench/gpu_check.py
step activations-4M "${BRU[@]}" bench activations --device cuda --dtype float32,bfloat16 --n 4000000 --rounds 20 --json
step activations-256M "${BRU[@]}" bench activations --device cuda --dtype float32,bfloat16 --n 268435456 --rounds 5 \
    --paths compiled,inplace,fused --json
step train "${BRU[@]}" bench train --device cuda --n-train 54000 --rounds 3 --workers 4 --json
step models "${BRU[@]}" bench models --device cuda --batches 50 --json
# packed seeds (random images of the data sets' shapes: no data on the GPU machine)
step packed-mlp4 "${BRU[@]}" bench packed --device cuda --synthetic --models mlp4 --seeds 10 --rounds 3 --json
step packed-lenet5 "${BRU[@]}" bench packed --device cuda --synthetic --models lenet5 --seeds 10 --rounds 2 --json
step packed-convpool "${BRU[@]}" bench packed --device cuda --synthetic --dataset cifar10 --models convpool \
    --seeds 10 --n-train 10000 --rounds 2 --no-conv --json
step estimate-paper-bf16 "${BRU[@]}" bench estimate configs/paper.yaml --device cuda --precision bf16 --batches 50 --json
step estimate-paper-bf16-compiled "${BRU[@]}" bench estimate configs/paper.yaml --device cuda --precision bf16 --compile \
    --batches 50 --json
# the measured cost of the full experiment, in one line per precision
for name in estimate-paper-bf16 estimate-paper-bf16-compiled; do
    [ -s "$OUT/$name.json" ] && "$PY" - "$OUT/$name.json" "$name" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
hours = sum(row["campaign_hours"] for row in rows)
print(f"{sys.argv[2]}: configs/paper.yaml costs {hours:.1f} GPU-hours as written (before pruning; one row per study in the JSON)")
PY
done
exit $failed
