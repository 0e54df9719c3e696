#!/usr/bin/env bash
# The GPU figures of issue #3 in one go, on one CUDA machine:  bash bench/gpu_suite.sh [OUTDIR]
# Needs torch (CUDA), diffusers, peft and bitsandbytes. Writes OUTDIR/gpu_train_speed.jsonl (one
# line per measurement) and OUTDIR/engine-*/ (end-to-end engine runs on the tiny base on CUDA).
# Sections run most-important first, each under its own time limit, so a slow one cannot hide
# the others' figures.
set -u
OUT=${1:-out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
JSON="$OUT/gpu_train_speed.jsonl"
bench() { timeout "$1" "$PY" bench/gpu_train_speed.py --json "$JSON" "${@:2}" || echo "section failed or timed out: $*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, diffusers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__)"

# 1. fast mode, as the engine trains (bf16 base, fp32 adapter, mixed precision): a typical trimmed caption
#    (32 T5 tokens) and the padded 512 that diffusers' script trains with
bench 150 --modes fast --resolutions 512 1024 --max-seq 32 512
# 2. low-memory mode: gradient checkpointing and a 4-bit NF4 base
bench 150 --modes low --nf4 --resolutions 512 1024 --max-seq 32
# 3. the engine end to end on CUDA (tiny base): fast, then low memory through diffusers' own
#    BitsAndBytesConfig loading
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
for mode in fast low; do
    timeout 120 "$PY" -m trainer.engine train --base tiny --images "$OUT/images" --trigger zxq --steps 30 \
        --device cuda --memory-mode $mode --sample-every 0 --val-every 10 --out "$OUT/engine-$mode" \
        > "$OUT/engine-$mode.log" 2>&1 && echo "engine $mode: ok" || echo "engine $mode: FAILED"
    grep -E "NF4|optimizer|device|validation loss before|step 30/30|Error|error" "$OUT/engine-$mode.log" | tail -n 8
done
# 4. comparisons at 1024² and 512²: peft's fp32 LoRA matmuls (the engine before its mixed
#    precision), bf16 adapter weights, and torch.compile of the blocks (compile time in warmup)
bench 90 --modes fast --precision upcast --resolutions 512 1024 --max-seq 32
bench 90 --modes fast --lora-dtype bf16 --resolutions 512 1024 --max-seq 32
bench 150 --modes fast --compile --resolutions 512 1024 --max-seq 32 --warmup 4
