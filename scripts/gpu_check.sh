#!/usr/bin/env bash
# The GPU checks of kqv's training fast path, for a machine with a CUDA GPU; about 3–4 minutes on an H100/H200.
#
#   scripts/gpu_check.sh                 # results also saved under $OUT (default: /tmp/kqv-gpu-check)
#   PYTHON=/path/to/python scripts/gpu_check.sh
#
# 1. the CUDA tests: bf16 autocast, TF32, pinned non-blocking batch copies, fused AdamW, a
#    torch.compile'd bf16 run whose checkpoints hold clean names (tests/train/test_gpu_path.py);
# 2. `kqv bench gpt --device cuda --preset gpt2` (GPT-2 124M, context 1024, bf16) compiled and
#    eager, printing tokens/s, ms/iteration, peak memory and MFU against the GPU's dense bf16 peak;
# 3. with 2 or more GPUs: two processes of `kqv gpt train` over nccl (torchrun).
# It needs python with a CUDA build of torch, numpy, safetensors, tokenizers, tqdm and matplotlib;
# kqv itself is taken from src/ (no install needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/kqv-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 KQV_NO_PROGRESS=1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible to torch'; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(), \
'bf16', torch.cuda.is_bf16_supported())" | tee "$OUT/device.txt"

echo "== 1. CUDA tests of the training fast path"
timeout 240 "$PY" -m pytest -q -rs -p no:cacheprovider tests/train/test_gpu_path.py 2>&1 | tee "$OUT/tests.txt"

bench() {  # $1: name, then extra flags
    local name=$1
    shift
    timeout 240 "$PY" -m kqv bench gpt --device cuda --preset gpt2 --set batch_size=16 --iters 20 --tokens 100 \
        --json "$@" 2>&1 | tee "$OUT/bench-$name.txt"
}
echo "== 2. kqv bench gpt, GPT-2 124M at context 1024, batch 16, bf16: torch.compile, then eager"
bench compiled --compile
bench eager
"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys

for name in ("compiled", "eager"):
    line = [l for l in (pathlib.Path(sys.argv[1]) / f"bench-{name}.txt").read_text().splitlines() if l.startswith("{")][-1]
    r = json.loads(line)
    print(f"{name:>8}: MFU {100 * r['mfu']:.1f} %  {r['train_tokens_per_second']:,.0f} tokens/s  "
          f"{r['train_ms_per_iter']:.1f} ms/iteration  peak {r['peak_memory_mib']:,.0f} MiB  "
          f"({r['flops_per_token']:,} FLOPs/token; peak: {r['peak_source']})")
EOF

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -ge 2 ]; then
    echo "== 3. two processes over nccl"
    timeout 240 "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m kqv gpt train --preset tiny \
        --device cuda --max-iters 50 --out "$OUT/ddp-run" --json 2>&1 | tail -3 | tee "$OUT/ddp.txt"
else
    echo "== 3. skipped: one GPU (multi-process training is tested on the CPU with gloo)"
fi
