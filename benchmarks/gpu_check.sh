#!/usr/bin/env bash
# The prepared GPU check (issue 15): on a machine with one GPU, in <= 9 minutes, one command
#   1. the CUDA tests (pytest -m cuda: SDPA backends, merge, bf16, Inductor, CUDA allocator, torchrun NCCL)
#   2. zeroi2v bench --device cuda --dtype bf16 --batch 32: ViT-B/16 and ViT-L/14 CLIP at 8/16/32 frames
#      (inference table, STDHA vs reference-style attention on the GPU)
#   2b. the STDHA fused kernel vs SDPA without temporal heads vs the shift path (python -m benchmarks.kernel_bench:
#      ViT-B/16, ViT-L/14 attention at 8/16/32 frames, eager and compiled; section kernel.md)
#   3. the training table (peak memory from the CUDA allocator)
#   4. torch.compile on/off (merged inference, training step)
#   5. will the GPU wait for the loader: CPU ms per clip on this host, gpu_augment's device part on the GPU
# and writes the generated GPU section docs/bench/gpu/gpu.md (+ its parts) and re-assembles docs/benchmarks.md.
# Timings are compared only within this one run.
#
#   bash benchmarks/gpu_check.sh                      # GPU, full sizes, 540 s budget
#   bash benchmarks/gpu_check.sh --small              # GPU, 8/16 frames, batch 16 (if time is short)
#   bash benchmarks/gpu_check.sh --device cpu --small # CPU dry run of every step with toy sizes
#
# Steps run in order while the time budget (--budget SECONDS) lasts; a step that would not fit, or that
# runs out of time, is reported as such in the section instead of stopping the check.
#
# The GPU image has no PyAV (needed to write and decode test videos) and no network. Carry its wheel:
# here, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl av==18.1.0
# then run this script with `.whl` carried; it installs .whl/*.whl into /tmp/site when `import av` fails.
# The files come back through $OUT (when set): gpu_check.tar.gz (docs/bench/gpu/), gpu.md, gpu_check.log.
# Unpack with `tar xzf gpu_check.tar.gz` in the repository root, then
#   python -c "from zeroi2v.bench_report import assemble; assemble('docs/benchmarks.md')"
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda SMALL=0 BUDGET=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --small) SMALL=1; shift ;;
        --budget) BUDGET="$2"; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && [ "$DEVICE" = cpu ] && PY=.venv/bin/python
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" CI=true PYTHONUNBUFFERED=1
if ! $PY -c "import av" 2>/dev/null && ls .whl/av-*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

DIR=docs/bench/gpu
rm -rf "$DIR"
mkdir -p "$DIR"
LOG="$DIR/gpu_check.log"
STEPS="$DIR/steps.jsonl"
: > "$STEPS"
START=$(date +%s)

B16=vit_base_patch16_clip_quickgelu_224
L14=vit_large_patch14_clip_quickgelu_224
SCALE=1  # step limits below are the GPU's; a CPU dry run's compile steps take minutes on a small machine
if [ "$DEVICE" = cpu ]; then  # dry run: every step, toy sizes
    BUDGET=${BUDGET:-3600} SCALE=5
    COMMON=(--device cpu --dtype fp32 --tiny)
    KERNEL=(--registers-only)
    COST=(--backbone "$B16" --frames 4 --batch 2 --repeats 2 --joint-frames 4)
    TRAIN=(--backbone "$B16" --frames 4 --train-batch 2 --train-steps 2)
    COMPILE=(--backbone "$B16" --frames 4 --batch 2 --train-batch 2 --repeats 2)
    LOADER=(--loader-videos 1 --loader-seconds 2 --loader-short-side 64 --loader-clips 4 --loader-rounds 1)
elif [ "$SMALL" = 1 ]; then
    BUDGET=${BUDGET:-540}
    COMMON=(--device cuda --dtype bf16)
    KERNEL=(--frames 8 16 --batch 16 --rounds 5)
    COST=(--backbone "$B16" "$L14" --frames 8 16 --batch 16 --repeats 3 --joint-frames 8)
    TRAIN=(--backbone "$B16" --frames 8 --train-batch 8 --train-steps 3)
    COMPILE=(--backbone "$B16" --frames 8 --batch 16 --train-batch 8 --repeats 3)
    LOADER=(--loader-videos 2 --loader-clips 8 --loader-rounds 2)
else
    BUDGET=${BUDGET:-540}
    COMMON=(--device cuda --dtype bf16)
    KERNEL=(--frames 8 16 32 --batch 32 --rounds 10)
    COST=(--backbone "$B16" "$L14" --frames 8 16 32 --batch 32 --repeats 5 --joint-frames 8)
    TRAIN=(--backbone "$B16" --frames 8 --train-batch 16 --train-steps 3)
    COMPILE=(--backbone "$B16" --frames 8 --batch 32 --train-batch 16 --repeats 5)
    LOADER=(--loader-videos 4 --loader-clips 16 --loader-rounds 3)
fi
BENCH=($PY -m zeroi2v.bench --out docs/benchmarks.md --section-dir "$DIR")

# step NAME MAX_SECONDS MIN_SECONDS COMMAND...: runs while the budget lasts (20 s kept for the report)
step() {
    local name=$1 max=$(($2 * SCALE)) min=$3; shift 3
    local now left limit rc begin
    now=$(date +%s); left=$((BUDGET - (now - START) - 20)); limit=$((max < left ? max : left))
    if [ "$limit" -lt "$min" ]; then
        echo "== $name: skipped, ${left}s left of the budget" | tee -a "$LOG"
        printf '{"step": "%s", "status": "skipped", "seconds": 0, "limit": %d}\n' "$name" "$limit" >> "$STEPS"
        return
    fi
    echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
    begin=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
    rc=$?
    local took=$(($(date +%s) - begin)) status=ok
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && status=timeout
    [ $rc -ne 0 ] && [ "$status" = ok ] && status="failed (exit $rc)"
    echo "== $name: $status in ${took}s" | tee -a "$LOG"
    printf '{"step": "%s", "status": "%s", "seconds": %d, "limit": %d, "command": "%s"}\n' \
        "$name" "$status" "$took" "$limit" "$*" >> "$STEPS"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi";
  $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())";
  $PY -c "import av; print('PyAV', av.__version__)" 2>/dev/null || echo "PyAV: not installed"; } >> "$LOG" 2>&1

step "CUDA tests" 200 60 $PY -m pytest -v -rfEs -p no:cacheprovider -m cuda tests/test_cuda.py
step "inference and STDHA tables" 220 60 "${BENCH[@]}" "${COMMON[@]}" "${COST[@]}" --what inference stdha --name cost
step "STDHA fused kernel" 150 40 $PY -m benchmarks.kernel_bench --out "$DIR" "${KERNEL[@]}"
step "training table" 190 40 "${BENCH[@]}" "${COMMON[@]}" "${TRAIN[@]}" --what train --name train
step "torch.compile on/off" 200 60 "${BENCH[@]}" "${COMMON[@]}" "${COMPILE[@]}" --compile
step "loader: will the GPU wait" 150 40 "${BENCH[@]}" "${COMMON[@]}" "${LOADER[@]}" --loader

$PY -m benchmarks.gpu_report "$DIR" --device "$DEVICE" --small "$SMALL" --budget "$BUDGET" \
    --seconds $(($(date +%s) - START)) >> "$LOG" 2>&1
echo "GPU check done in $(($(date +%s) - START)) s; section $DIR/gpu.md" | tee -a "$LOG"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    tar czf "$OUT/gpu_check.tar.gz" "$DIR" docs/benchmarks.md
    cp "$DIR/gpu.md" "$LOG" "$OUT/" 2>/dev/null
fi
