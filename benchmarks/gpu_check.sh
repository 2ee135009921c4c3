#!/usr/bin/env bash
# Device checks for one GPU (written for an H200; about 2-3 minutes, mostly process start-up).
#     bash benchmarks/gpu_check.sh
# Writes one JSON object per line to ${OUT:-.}/gpu_grad.json (the last line of each benchmark run)
# and the runs' human-readable output to ${OUT:-.}/gpu_grad.log.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${OUT:-.}"
mkdir -p "$out_dir"
json="$out_dir/gpu_grad.json"
log="$out_dir/gpu_grad.log"
: >"$json"
: >"$log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log" || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" | tee -a "$log"

bench() {  # one run of the gradient benchmark (at most 150 s); its JSON line goes to $json
    echo "=== $*" >>"$log"
    timeout 150 python benchmarks/grad_throughput.py --device cuda --json "$@" 2>>"$log" | tail -n 1 | tee -a "$json" \
        || echo "{\"failed\": \"$*\"}" | tee -a "$json"
}

# 1. gradient throughput: reference loop, vmap, our engine, plain forward+backward (the limit)
bench --model wrn16-1 --images 512
bench --model wrn28-10 --images 256
# 2. sign mismatches with TF32 off (cuDNN convolutions use TF32 by default)
bench --model wrn28-10 --images 256 --tf32 off --skip vmap
# 3. the engine's other choices on the GPU (engine and limit only; "auto" there is im2col, channels-first)
bench --model wrn28-10 --images 256 --skip loop,vmap,f64 --repeats 2 --conv-method shifted
bench --model wrn28-10 --images 256 --skip loop,vmap,f64 --repeats 2 --conv-method grouped
bench --model wrn28-10 --images 256 --skip loop,vmap,f64 --repeats 2 --channels-last on

# LEAD: add the training-epoch benchmark and the smoke run here.
