#!/usr/bin/env bash
# The lead's one-shot device script (one H200): the GPU checks of docs/BENCHMARKS.md, the smoke preset
# end to end on CUDA, and the validity evaluation over 5 seeds on CUDA (seeds run in parallel).
#     run: bash benchmarks/device_run.sh      (carry data/FashionMNIST; writes into $OUT)
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
O=${OUT:-/tmp/device_out}; mkdir -p "$O"
t0=$(date +%s)
mkdir -p /usr/share/datasets/fashion-mnist && cp data/FashionMNIST/raw/*.gz /usr/share/datasets/fashion-mnist/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"

# 1. validity over seeds, started first in the background: 5 independent pipelines on the one GPU
EV=/tmp/ev
for s in 0 1 2 3 4; do
  w=$EV/seeds/$s; mkdir -p $w
  python3 reproduce.py --preset fmnist --seed $s --scale 1.0 --workdir $w --out $w/results --gpu 0 \
     > $w/log 2>&1 &
done

# 2. gradient throughput (helper's script), one training epoch fp32 vs bf16 (autotuned cuDNN, then
#    --deterministic kernels: their cost), smoke on CUDA
OUT=$O timeout 150 bash benchmarks/gpu_check.sh > /dev/null 2>&1; echo "gpu_check rc=$? at $(( $(date +%s) - t0 )) s"
timeout 90 python3 benchmarks/train_epoch.py --model wrn28-10 --images 10000 --device cuda --json 2>/dev/null \
  | tee "$O/train_epoch.txt"; echo "train_epoch at $(( $(date +%s) - t0 )) s"
timeout 90 python3 benchmarks/train_epoch.py --model wrn28-10 --images 10000 --device cuda --json --deterministic \
  2>/dev/null | tee "$O/train_epoch_deterministic.txt"; echo "train_epoch --deterministic at $(( $(date +%s) - t0 )) s"
s0=$(date +%s)
timeout 150 python3 reproduce.py --preset smoke --gpu 0 --workdir /tmp/smoke --out /tmp/smoke/results \
  > /tmp/smoke.log 2>&1; echo "smoke rc=$? in $(( $(date +%s) - s0 )) s"
cp /tmp/smoke/results/results.md "$O/smoke_cuda.md" 2>/dev/null; tail -3 /tmp/smoke.log

# 3. wait for the seeds (bounded), then aggregate
deadline=$(( t0 + ${BUDGET:-420} ))
while [ "$(jobs -r | wc -l)" -gt 0 ] && [ "$(date +%s)" -lt $deadline ]; do sleep 5; done
echo "seeds done or deadline at $(( $(date +%s) - t0 )) s; still running: $(jobs -r | wc -l)"
kill $(jobs -p) 2>/dev/null
for s in 0 1 2 3 4; do tail -2 $EV/seeds/$s/log | cut -c1-200; done
timeout 60 python3 evaluate.py --preset fmnist --seeds 5 --gpu 0 --out $EV > /tmp/ev.log 2>&1; echo "evaluate rc=$?"
cp $EV/validity.json $EV/validity.md "$O/" 2>/dev/null
tar czf "$O/seeds.tar.gz" --exclude='*.pt' --exclude='*.npy' --exclude='*.png' --exclude='data' --exclude='*.state*' -C $EV seeds 2>/dev/null
cat $EV/validity.md 2>/dev/null
echo "total $(( $(date +%s) - t0 )) s"
