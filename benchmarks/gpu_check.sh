#!/usr/bin/env bash
# GPU check of the VGS-Lightning benchmarks: one prepared run, about 5 minutes on one H200 (limit 8).
#
#   OUT=/path/to/results bash benchmarks/gpu_check.sh      # OUT defaults to benchmarks/results/gpu
#
# 1. the core rows on CUDA (similarity matrices, both losses forward + backward, recall@k) against the loop
#    baselines, with peak GPU memory of both sides;
# 2. DAVEnet at full size (VGG16 + 5-conv audio net, MISA, sampled margin loss), batch 64, 1024 frames:
#    fp32 vs bf16 autocast, + channels-last, + torch.compile on the audio net; samples/s and MFU (model
#    FLOPs from benchmarks/training.py::model_flops over the H200's dense peak: 989 TFLOP/s bf16, 67 fp32);
# 3. the other paper models and the demo preset, fp32 and bf16 + channels-last.
# Every step has its own time limit and writes <name>.json and <name>.log into $OUT; a failed step does not
# stop the others. The exit status is 1 if any step failed.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in .venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
      PY=$candidate
      break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "gpu_check: no Python with torch found (set PYTHON=...)" | tee "$OUT/error.txt"
  exit 1
fi

export WANDB_MODE=disabled PYTHONUNBUFFERED=1
"$PY" - <<'EOF' 2>&1 | tee "$OUT/environment.txt"
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda)
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch.cuda.is_available() is False")
p = torch.cuda.get_device_properties(0)
print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"{p.multi_processor_count} SMs")
print("tf32 matmul", torch.backends.cuda.matmul.allow_tf32, "| cudnn tf32", torch.backends.cudnn.allow_tf32)
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

status=0
step() {  # step NAME LIMIT_S ARGS...: one `python -m benchmarks --device cuda` run
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$PY" -m benchmarks --device cuda --out "$OUT/$name.json" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  [ "$rc" -eq 0 ] || status=1
}

step core 120 --rows sim,loss,recall
step davenet_precision 210 --rows train --train-models davenet \
  --train-variants fp32,bf16,bf16+cl,bf16+cl+compile --train-batch 64
step models 120 --rows train --train-models resdavenet,nips2016,acl2017,demo \
  --train-variants fp32,bf16+cl --train-batch 64
exit $status
