#!/usr/bin/env bash
# Packs what bench/gpu_device_run.sh needs on the GPU machine into .gpu_carry/part.NN (each < 58 MB, so a
# part plus the working tree fits one call's 64 MiB), from a downloaded onnxruntime-gpu wheel (CUDA 13,
# cp312), the gguf wheel and the GGUF from the model cache.
#   bash bench/gpu_stage.sh .whl/onnxruntime_gpu-*.whl .whl/gguf-*.whl .data/models/_source/SmolLM2-135M-Instruct.Q4_1.gguf
# onnxruntime-gpu's CUDA provider library carries kernels for sm_75..sm_120 (218 MB of fatbin); the
# H100/H200 run only sm_90 ones, so the others' payloads are zeroed (headers kept: the CUDA runtime
# picks an entry by its header's arch) and then compress to nothing: 256 MB of wheel becomes ~69 MB.
set -euo pipefail
ORT_WHL=$1 GGUF_WHL=$2 GGUF=$3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/pkg" && unzip -q "$(realpath "$ORT_WHL")" -d "$WORK/pkg"
rm -f "$WORK"/pkg/onnxruntime/capi/libonnxruntime_providers_tensorrt.so
python3 bench/fatbin_keep_arch.py "$WORK"/pkg/onnxruntime/capi/libonnxruntime_providers_cuda.so 90
(cd "$WORK/pkg" && tar -cf - onnxruntime onnxruntime_gpu-*.dist-info | xz -9 -T2 > "$WORK/ort-gpu-sm90.tar.xz")
cp "$GGUF_WHL" "$GGUF" "$WORK"/
(cd "$WORK" && sha256sum ort-gpu-sm90.tar.xz "$(basename "$GGUF_WHL")" "$(basename "$GGUF")" > bundle.sha256 \
  && tar -cf bundle.tar ort-gpu-sm90.tar.xz "$(basename "$GGUF_WHL")" "$(basename "$GGUF")" bundle.sha256)
rm -rf .gpu_carry && mkdir -p .gpu_carry
split -n 3 -d "$WORK/bundle.tar" .gpu_carry/part.
ls -la .gpu_carry
