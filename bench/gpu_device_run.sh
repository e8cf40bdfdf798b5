#!/usr/bin/env bash
# The GPU measurement, run on a lent H100/H200 from the repository root (bench/README.md, "GPU run").
#
# The machine has torch, transformers and a CPU-only onnxruntime, no network, and a call carries at most
# 64 MiB.  bench/gpu_stage.sh packs here what is missing (onnxruntime-gpu with only its sm_90 kernels,
# xz-compressed; the gguf wheel; the GGUF) and splits it into parts that travel in successive calls as
# .gpu_carry/part.*; each call first copies its part to /tmp/stage (kept while the machine stays warm).
#   bash bench/gpu_device_run.sh stage   # a call that only carries a part
#   bash bench/gpu_device_run.sh run     # the last part: assemble, install into /tmp/site, measure
set -u
STAGE=/tmp/stage
mkdir -p "$STAGE" "${OUT:-/tmp/out}"
OUT=${OUT:-/tmp/out}
cp -f .gpu_carry/part.* "$STAGE"/ 2>/dev/null
ls -la "$STAGE" | tee -a "$OUT/stage.txt"
[ "${1:-run}" = "stage" ] && { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/stage.txt"; exit 0; }

set -o pipefail
export PYTHONUNBUFFERED=1
cd "$STAGE" && cat part.* > bundle.tar && tar -xf bundle.tar && sha256sum -c bundle.sha256 || exit 3
cd - >/dev/null
python3 - <<'PY' || exit 4
import tarfile, zipfile, glob
tarfile.open("/tmp/stage/ort-gpu-sm90.tar.xz").extractall("/tmp/site")
for whl in glob.glob("/tmp/stage/gguf-*.whl"):
    zipfile.ZipFile(whl).extractall("/tmp/site")
PY
export PYTHONPATH=/tmp/site
# onnxruntime-gpu loads cuBLAS/cuDNN/cuFFT/cuRAND by soname: point it at the CUDA 13 wheels torch uses
SITE=$(python3 -c 'import site; print(site.getsitepackages()[0])')
export LD_LIBRARY_PATH=$(find "$SITE/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:):${LD_LIBRARY_PATH:-}
mkdir -p /tmp/stage/gguf_dir && ln -sf /tmp/stage/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/stage/gguf_dir/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 bench/bench_gpu.py --gguf-dir /tmp/stage/gguf_dir --model-dir /tmp/stage/models \
  --batch "${BATCH:-64}" --tokens "${TOKENS:-128}" --out "$OUT/gpu_figures.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu_bench.log"
