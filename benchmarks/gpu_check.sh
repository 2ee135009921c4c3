#!/usr/bin/env bash
# Device checks for one GPU (written for an H200): the gradient benchmark on CUDA. Run from anywhere:
#     bash benchmarks/gpu_check.sh
# Writes one JSON object per line to ${OUT:-.}/gpu_grad.json (the last line of each benchmark run)
# and the runs' human-readable output to ${OUT:-.}/gpu_grad.log. Runs are in order of importance, so
# an outer time limit (benchmarks/device_run.sh gives it 150 s) cuts the least important ones.
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

bench() {  # one run of the gradient benchmark (at most 100 s); its JSON line goes to $json
    echo "=== $*" >>"$log"
    timeout 100 python benchmarks/grad_throughput.py --device cuda --json "$@" 2>>"$log" | tail -n 1 | tee -a "$json" \
        || echo "{\"failed\": \"$*\"}" | tee -a "$json"
}

# 1. gradient throughput: reference loop, vmap, our engine, plain forward+backward (the limit)
bench --model wrn16-1 --images 512 --repeats 2
bench --model wrn28-10 --images 256 --repeats 2
# 2. sign mismatches with TF32 off (cuDNN convolutions use TF32 by default)
bench --model wrn28-10 --images 256 --repeats 1 --tf32 off --skip vmap
# 3. the engine's other choices on the GPU (engine and limit only; "auto" there is im2col, channels-first)
bench --model wrn28-10 --images 256 --repeats 1 --skip loop,vmap,f64 --conv-method shifted
bench --model wrn28-10 --images 256 --repeats 1 --skip loop,vmap,f64 --channels-last on
bench --model wrn28-10 --images 256 --repeats 1 --skip loop,vmap,f64 --conv-method grouped

# LEAD: add the training-epoch benchmark and the smoke run here.
