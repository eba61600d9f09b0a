#!/usr/bin/env bash
# The GPU checks, in one short run on a lent machine (see /work/.library/device): results land in $OUT.
#   1. speed and memory of GLIANet next to a plain ViT-B/16 (bf16, batch 128, forward and training step) and the
#      unified benchmark benchmarks/bench_train.py (its epoch rows in 3b, once the built-in set exists);
#   2. the test suite against that machine's library versions (transformers 5.17, torch 2.11, peft, accelerate);
#   3. the built-in data set's build time on 2 cores (taskset), the bound;
#   4. training on the GPU through the one loop: ViT-B/16-sized random backbone, built-in set, bf16, the semantic
#      cache in bf16 on disk (data.semantic_cache_dtype / semantic_cache_dir).
# Wheels that machine lacks travel in .whl/ (carry it); the repository is used in place through PYTHONPATH.
set -u
OUT=${OUT:-/tmp/device_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  > "$OUT/setup.log" 2>&1 || { echo "wheel install failed"; tail "$OUT/setup.log"; exit 1; }
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 HF_HOME=/tmp/hf HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export HF_HUB_DISABLE_PROGRESS_BARS=1
{ nvidia-smi -L; python3 -c "import torch, transformers, peft, accelerate, datasets; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__)"; } 2>&1 | tee "$OUT/versions.txt"

echo "== 1. benchmark"
timeout 150 python3 benchmarks/bench_forward.py --device cuda --dtype bf16 --batch-size 128 --train --repeats 10 --warmup 3 2>&1 | tee "$OUT/bench_gpu.txt"
# The unified benchmark (rows, ratios, fraction of the FLOP limit, peak memory); the epoch rows on the built-in set's
# first 64 images need that set built (step 3 builds it), so they run after it, in step 3b.
timeout 200 python3 benchmarks/bench_train.py --size base --device cuda --dtype bf16 --batch-size 128 --repeats 3 \
  --warmup 1 --skip-epochs --json "$OUT/bench_train_gpu.json" 2>&1 | grep -v "it/s\]" | tee "$OUT/bench_train_gpu.txt"

echo "== 2. tests"
timeout 200 python3 -m pytest -q -p no:cacheprovider --timeout 150 -x 2>&1 | tail -25 | tee "$OUT/pytest_gpu_machine.txt"

echo "== 3. built-in set on 2 cores"
/usr/bin/time -v taskset -c 0,1 python3 -c "from glia_hf.data import build_builtin_dataset as b; print(b(progress=False))" \
  > "$OUT/builtin_build.txt" 2>&1; grep -E "Elapsed|User time|System time|builtin" "$OUT/builtin_build.txt"

# Rows include glia_epoch_cached (fp32 cache in host memory) and glia_epoch_cached_bf16_disk (bf16, memory-mapped).
echo "== 3b. epochs through the training loop (ViT-B/16, bf16, 64 built-in images, batch 32, 4 workers)"
timeout 200 python3 benchmarks/bench_train.py --size base --device cuda --dtype bf16 --batch-size 32 --repeats 2 \
  --warmup 1 --workers 4 --json "$OUT/bench_train_gpu_epochs.json" 2>&1 | grep -v "it/s\]" | tail -30 \
  | tee "$OUT/bench_train_gpu_epochs.txt"

echo "== 4. training on the GPU"
timeout 180 accelerate launch --num_processes 1 --mixed_precision bf16 training/train.py \
  --config training/configs/quickstart.yaml --output.dir /tmp/gpu_run --data.splits [0] --optim.epochs 2 \
  --optim.batch_size 128 --eval.batch_size 128 --data.num_workers 8 --model.glia.latent_dim 64 \
  --data.semantic_cache_dtype bf16 --data.semantic_cache_dir /tmp/gpu_tokens \
  --model.backbone '{hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072, image_size: 224, patch_size: 16}' \
  2>&1 | grep -v "it/s\]" | tail -30 | tee "$OUT/train_gpu.txt"
cp /tmp/gpu_run/results.json "$OUT/train_gpu_results.json" 2>/dev/null
echo "done"
