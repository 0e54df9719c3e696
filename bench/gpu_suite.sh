#!/usr/bin/env bash
# The GPU figures of issue #3 in one go, on one CUDA machine:  bash bench/gpu_suite.sh [OUTDIR] [candidates]
# With "candidates": only the speed ideas not measured yet (the engine's new `fp8` setting, the
# fused eager kernels, cuDNN attention, Inductor max-autotune), to measure first when a GPU
# session has little time.
# Needs torch (CUDA), diffusers, peft and bitsandbytes. Writes OUTDIR/gpu_train_speed.jsonl (one
# line per measurement), OUTDIR/*.log and OUTDIR/engine-*/ (end-to-end engine runs on the tiny
# base on CUDA). Sections run most-important first, each under its own time limit and all under
# SUITE_SECONDS (default 540), so a slow one cannot hide the others' figures.
set -u
OUT=${1:-out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
JSON="$OUT/gpu_train_speed.jsonl"
TOTAL=${SUITE_SECONDS:-540}

# limited SECONDS CMD...: run CMD under min(SECONDS, what is left of TOTAL); skip it when under 30 s are left
limited() {
    local left=$((TOTAL - SECONDS))
    local limit=$(( $1 < left - 5 ? $1 : left - 5 ))
    if (( limit < 30 )); then echo "skipped (suite time spent): ${*:2}"; return 1; fi
    timeout "$limit" "${@:2}"
}
bench() {  # bench LOGNAME SECONDS ARGS...: one gpu_train_speed.py run, its output also in OUT/LOGNAME.log
    limited "$2" "$PY" bench/gpu_train_speed.py --json "$JSON" "${@:3}" > "$OUT/$1.log" 2>&1 \
        || echo "section $1 failed or timed out: ${*:3}"
    grep -E "^arch=|skipping cudagraphs|Error" "$OUT/$1.log" | sort | uniq -c | sed 's/^ *1 //' | tail -n 8
}
engine() {  # engine NAME SECONDS ARGS...: a 30-step tiny-base training run through the CLI
    limited "$2" "$PY" -m trainer.engine train --base tiny --images "$OUT/images" --trigger zxq --steps 30 \
        --device cuda --sample-every 0 --val-every 10 --out "$OUT/engine-$1" "${@:3}" > "$OUT/engine-$1.log" 2>&1 \
        && echo "engine $1: ok" || echo "engine $1: FAILED"
    grep -E "NF4|optimizer|cuda_graphs|fp8|validation loss before|step (10|20|30)/30|skipping cudagraphs|Error|error" \
        "$OUT/engine-$1.log" | sort -u | tail -n 10
}

engine_images() {  # the four captioned images the engine runs train on
    "$PY" - "$OUT/images" <<'PY'
import sys
from pathlib import Path
from PIL import Image, ImageDraw
folder = Path(sys.argv[1]); folder.mkdir(parents=True, exist_ok=True)
for i in range(4):
    image = Image.new("RGB", (96, 96), (40 * i, 90, 200 - 40 * i))
    ImageDraw.Draw(image).ellipse((10 + 8 * i, 20, 70 + 8 * i, 80), fill=(250, 220, 30))
    image.save(folder / f"{i}.png")
    (folder / f"{i}.txt").write_text(f"zxq, a yellow disc number {i}")
PY
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, diffusers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__)"
export TORCH_LOGS=perf_hints  # Inductor says here when (and why) it could not use CUDA graphs

candidates() {
    # the `fp8` setting (not yet timed on a GPU): eager, then with compile + CUDA graphs; then the
    # engine end to end with it (loss= and the validation lines show whether it learns)
    bench fp8 100 --modes fast --fp8 --resolutions 512 1024 --max-seq 32
    bench fp8-graphs 200 --modes fast --fp8 --cuda-graphs --resolutions 512 1024 --max-seq 32 --warmup 5
    engine_images
    engine fp8 90 --memory-mode fast --fp8
    # eager steps with the fused LoRA matmuls and rotary embedding (the engine's eager default
    # since they were written, CPU-measured only), then without them, as before
    bench fused 100 --modes fast --resolutions 512 1024 --max-seq 32
    bench unfused 100 --modes fast --unfused --resolutions 512 1024 --max-seq 32
    # cuDNN's attention (left out by the engine: NaN / illegal memory access with torch 2.11 on an
    # H100; `loss=` shows whether this torch and card compute it), then max-autotune's matmul tiles
    bench cudnn 120 --modes fast --attention cudnn --resolutions 512 1024 --max-seq 32
    bench autotune 400 --modes fast --cuda-graphs --autotune --resolutions 512 1024 --max-seq 32 --warmup 5
}
if [ "${2:-all}" = candidates ]; then candidates; echo "suite done in ${SECONDS}s"; exit 0; fi

# 1. fast mode as the engine trains by default: bf16 base, fp32 adapter, bf16 LoRA matmuls, fused AdamW
bench fast 100 --modes fast --resolutions 512 1024 --max-seq 32
# 2. fast mode with compile and CUDA graphs (compile time is in the warmup)
bench graphs 200 --modes fast --cuda-graphs --resolutions 512 1024 --max-seq 32 --warmup 5
# 3. the engine end to end on CUDA (tiny base): eager, compiled with CUDA graphs, and low memory
#    (4-bit base through diffusers' BitsAndBytesConfig loading, 8-bit AdamW)
engine_images
engine fast 60 --memory-mode fast
engine graphs 120 --memory-mode fast --compile --cuda-graphs
engine low 60 --memory-mode low
# 4. comparisons: the previous default optimizer (8-bit AdamW) in fast mode, compile without graphs,
#    and low memory mode's VRAM at 1024²
bench fast-8bit 90 --modes fast --optimizer adamw8bit --resolutions 512 1024 --max-seq 32
bench compile 150 --modes fast --compile --resolutions 512 1024 --max-seq 32 --warmup 4
bench low 90 --modes low --resolutions 1024 --max-seq 32
# 5. candidates, if time is left
candidates
echo "suite done in ${SECONDS}s"
