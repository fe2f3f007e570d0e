#!/usr/bin/env bash
# The GPU checks of docs/scaling.md, in one go: the CUDA tests, the network's passes in fp32 and bf16, k-means on
# the GPU for the N x k grid, the loader on raw and prepared JPEG folders (and nvJPEG), AlexNet's epochs on a
# prepared folder decoded on the GPU, PIC's graph on the GPU, and a short Fashion-MNIST run on the GPU, then its
# extraction in bf16 against fp32 (speed, clusterings). Run from the repository root with a Python that has torch
# and faiss (and this package, or PYTHONPATH=src):
#     bash benchmarks/gpu_check.sh [FASHION_MNIST_DIR] [OUT_DIR]
# Every check runs, whatever the ones before it did; each ends with one line (ok or FAILED, and its seconds), the
# lines are printed again together at the end, and the script exits 1 when any check failed. A GPU test that is
# skipped counts as failed: on a GPU machine every one of them must run.
set -uo pipefail
export PY=${PYTHON:-python3}
export DATA=${1:-/usr/share/datasets/fashion-mnist}
export OUT=${2:-runs/gpu-check}
export PYTHONUNBUFFERED=1
SUMMARY=()
FAILED=0

check() {  # check NAME COMMAND: COMMAND (one string, run by bash with pipefail); its status is the check's
  local name=$1 start=$SECONDS line
  echo "== $name"
  if bash -o pipefail -c "$2"; then line="ok     $name"; else line="FAILED $name"; FAILED=1; fi
  line="$line ($((SECONDS - start)) s)"
  echo "$line"
  SUMMARY+=("$line")
}

check "the GPU and the libraries" 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader &&
  $PY -c "import torch, faiss; print(\"torch\", torch.__version__, \"faiss\", faiss.__version__, \"cuda\", torch.version.cuda); assert torch.cuda.is_available()"'
check "CUDA tests (tests/test_gpu.py, tests/clustering; none skipped)" 'mkdir -p "$OUT" &&
  $PY -m pytest -q -rs -p no:cacheprovider --tb=short tests/test_gpu.py tests/clustering > "$OUT/tests.txt" 2>&1;
  status=$?; tail -40 "$OUT/tests.txt"; [ $status -eq 0 ] && ! grep -q " skipped" "$OUT/tests.txt"'
for p in fp32 bf16; do
  check "AlexNet passes at 224 px, $p" "\$PY benchmarks/scaling.py network --arch alexnet --size 224 --batch 256 --steps 20 --precision $p"
done
check "k-means on the GPU, the N x k grid" '$PY benchmarks/scaling.py kmeans --backend torch --full-below 1e12'
check "k-means at ImageNet size, k 10000" '$PY benchmarks/scaling.py kmeans --backend torch --sizes 1281167 --ks 10000 --full-below 1e12'
check "the clustering stage's memory at 1M images" '$PY benchmarks/scaling.py memory --device cuda --k 10000'
check "the loader on raw and prepared JPEGs" '$PY benchmarks/scaling.py loading --images 8000 --workers 0,4,8,16 --keep "$OUT/photos"'
# AlexNet's passes over the prepared folder, JPEGs decoded by nvJPEG (--decode auto), not held in memory: images/s
# of its epochs (metrics.jsonl) against the network alone above
check "AlexNet epochs on a prepared folder decoded by nvJPEG" 'rm -rf "$OUT/photos-prepared" &&
  $PY -m deepcluster prepare "$OUT/photos" "$OUT/photos-prepared" &&
  $PY -m deepcluster train --data "$OUT/photos-prepared" --recipe paper --arch alexnet --k 100 --epochs 2 --cache-gb 0 \
    --no-report --out "$OUT/prepared-run" --overwrite 2>&1 | tr "\r" "\n" | grep -av "%|" | tail -4 &&
  $PY -c "import json, sys; [print(\"epoch %d: extraction %.0f images/s, training %.0f images/s\" % (r[\"epoch\"],
8000 / r[\"time_features\"], 8000 / r[\"time_training\"])) for r in map(json.loads, open(sys.argv[1]))
if \"time_training\" in r]" "$OUT/prepared-run/metrics.jsonl"'
check "Fashion-MNIST, 2 epochs on the GPU" '$PY -m deepcluster train --config configs/fashion-mnist.yaml --data-root "$DATA" --epochs 2 --workers 4 \
  --out "$OUT/fashion-mnist" --overwrite 2>&1 | tr "\r" "\n" | grep -av "%|" | tail -16'
check "its extraction in bf16 against fp32" '$PY benchmarks/precision.py "$OUT/fashion-mnist" --precisions fp32,bf16 --device cuda'

echo "== summary ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git'), $(date -u +%Y-%m-%d))"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
