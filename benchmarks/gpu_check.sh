#!/bin/sh
# The GPU checks of docs/scaling.md, in one go: the CUDA tests, the network's passes in fp32 and bf16, k-means on
# the GPU for the N x k grid, the loader on raw and prepared JPEG folders (and nvJPEG), AlexNet's epochs on a
# prepared folder decoded on the GPU, PIC's graph on the GPU, and a short
# Fashion-MNIST run on the GPU, then its extraction in bf16 against fp32 (speed, clusterings). Run from the repository root with a Python
# that has torch and faiss (and this package, or PYTHONPATH=src):
#     sh benchmarks/gpu_check.sh [FASHION_MNIST_DIR] [OUT_DIR]
set -e
PY=${PYTHON:-python3}
DATA=${1:-/usr/share/datasets/fashion-mnist}
OUT=${2:-runs/gpu-check}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, faiss; print('torch', torch.__version__, 'faiss', faiss.__version__, 'cuda', torch.version.cuda)"
$PY -m pytest -q -p no:cacheprovider --tb=short tests/test_gpu.py tests/clustering 2>&1 | tail -40
for p in fp32 bf16; do $PY benchmarks/scaling.py network --arch alexnet --size 224 --batch 256 --steps 20 --precision $p; done
$PY benchmarks/scaling.py kmeans --backend torch --full-below 1e12
$PY benchmarks/scaling.py kmeans --backend torch --sizes 1281167 --ks 10000 --full-below 1e12
$PY benchmarks/scaling.py memory --device cuda --k 10000
$PY benchmarks/scaling.py loading --images 8000 --workers 0,4,8,16 --keep "$OUT/photos"
# AlexNet's passes over the prepared folder, JPEGs decoded by nvJPEG (--decode auto), not held in memory: images/s
# of its epochs (metrics.jsonl) against the network alone above
$PY -m deepcluster prepare "$OUT/photos" "$OUT/photos-prepared"
$PY -m deepcluster train --data "$OUT/photos-prepared" --recipe paper --arch alexnet --k 100 --epochs 2 --cache-gb 0 \
  --no-report --out "$OUT/prepared-run" --overwrite 2>&1 | tr '\r' '\n' | grep -av '%|' | tail -4
$PY -c "import json; rows = [json.loads(l) for l in open('$OUT/prepared-run/metrics.jsonl')]; \
[print(f\"epoch {r['epoch']}: extraction {8000 / r['time_features']:,.0f} images/s, training \
{8000 / r['time_training']:,.0f} images/s\") for r in rows if 'time_training' in r]"
$PY -m deepcluster train --config configs/fashion-mnist.yaml --data-root "$DATA" --epochs 2 --workers 4 \
  --out "$OUT/fashion-mnist" --overwrite 2>&1 | tr '\r' '\n' | grep -av '%|' | tail -16
$PY benchmarks/precision.py "$OUT/fashion-mnist" --precisions fp32,bf16 --device cuda
