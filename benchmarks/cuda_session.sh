#!/usr/bin/env bash
# The CUDA checks of one lent GPU session, in one go (see benchmarks/README.md): the training-step benchmark in
# fp32 / bf16 / fp16, channels-last, compiled and captured (run.capture), the paper's and the fast recipe, at 256 px
# (batch 1 and 8), the CUDA tests, four runs sharing the GPU, and a short real run through the
# CLI on CUDA with the loop's parts (fused Adam, TTUR, cosine schedule, fp16 gradient scaling), stopped and
# resumed. Prints everything; writes logs to $OUT when set. Usage: bash benchmarks/cuda_session.sh
set -uo pipefail
OUT=${OUT:-/tmp/i2i-cuda}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; fi
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || { echo "install failed"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
bench() { echo "== train_step $*"; timeout 240 python3 benchmarks/train_step.py --device cuda "$@" 2>&1 | grep -v Warning; }
{
  bench --size 256 --batch 1 --steps 20 --warmup 3
  bench --size 256 --batch 1 --steps 20 --warmup 3 --channels-last --optim fused --no-peak
  bench --size 256 --batch 1 --steps 20 --warmup 3 --precision bf16 --channels-last --optim fused --no-peak
  bench --size 256 --batch 1 --steps 20 --warmup 3 --precision fp16 --channels-last --optim fused --no-peak
  bench --size 256 --batch 1 --steps 20 --warmup 5 --precision bf16 --channels-last --optim fused --compile --no-peak
  bench --size 256 --batch 8 --steps 10 --warmup 5 --precision bf16 --channels-last --optim fused --compile --no-reference
  # issue 30: the step recorded as a CUDA graph (run.capture), the paper's recipe and the fast one
  bench --size 256 --batch 1 --steps 30 --warmup 6 --capture --no-peak
  bench --size 256 --batch 1 --steps 30 --warmup 6 --precision bf16 --channels-last --capture --no-peak
  bench --size 256 --batch 1 --steps 30 --warmup 6 --recipe cyclegan_fast --no-peak --no-reference
  bench --size 256 --batch 1 --steps 30 --warmup 6 --recipe cyclegan_fast --precision bf16 --channels-last --capture --no-peak --no-reference
  bench --size 256 --batch 8 --steps 10 --warmup 6 --precision bf16 --channels-last --capture --no-peak --no-reference
} | tee "$OUT/train_step.log"
echo "== pytest on CUDA: the recorded step trains like the eager one; tiles on the GPU"
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_capture.py tests/test_tiles.py -k "gpu or cuda" 2>&1 | tail -3
echo "== four quick starts on one GPU: one after another vs a sweep --jobs 4 (captured steps)"
timeout 400 python3 benchmarks/sharing.py --steps 200 --jobs 4 --set run.device=cuda --set run.capture=true 2>&1 | tail -9 | tee "$OUT/sharing.log"
echo "== a real run on CUDA: fp16, fused Adam, TTUR, cosine; checkpoint at 10, resumed to 20"
RUN=/tmp/i2i-cuda-run; rm -rf $RUN
ARGS=(--set run.device=cuda --set run.precision=fp16 --set optim.implementation=fused --set optim.D.lr=4e-4
      --set schedule.name=cosine --set data.count=16 --set train.log_every=5 --set callback.checkpoints.every=10)
python3 -m i2i run recipes/quickstart.toml "${ARGS[@]}" --set train.max_steps=10 --out $RUN 2>&1 | tail -3
python3 -m i2i run recipes/quickstart.toml "${ARGS[@]}" --set train.max_steps=20 --out $RUN --resume 2>&1 | tail -3
cat $RUN/metrics.jsonl | tee "$OUT/run_metrics.jsonl" | cut -c1-200
ls $RUN/checkpoints
