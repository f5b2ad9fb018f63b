#!/usr/bin/env bash
# One-shot check on a machine with an NVIDIA GPU, time-boxed to fit a short lease:
# builds the CUDA extension, runs the GPU tests, times training (autoencoder
# stages 1-2, DiT with its sphere-op share) and the kernels, and prints a table last.
# Results land in ${OUT:-bench/results}/gpu_*.json and .txt.
#
# Wheels and weights the machine lacks can travel in .gpu/ (git-ignored):
# timm, geoopt, flow_matching, lpips wheels and vgg16_fp16.pth (LPIPS's VGG16).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
out="${OUT:-bench/results}"
mkdir -p "$out"
python=${PYTHON:-python3}
budget=${GPU_CHECK_SECONDS:-380}
deadline=$(( $(date +%s) + budget ))
# seconds for a section: its cap, or what is left before the deadline
slot() { local left=$(( deadline - $(date +%s) )); (( left < $1 )) && echo $(( left > 1 ? left : 1 )) || echo "$1"; }

if compgen -G ".gpu/*.whl" > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/*.whl
  export PYTHONPATH=/tmp/site
fi
vgg=""; [[ -f .gpu/vgg16_fp16.pth ]] && vgg="--vgg .gpu/vgg16_fp16.pth"

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$python" -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)"

echo "== build (CUDA extension, sm_90)"
start=$(date +%s)
# --no-deps / --no-build-isolation: use the machine's own torch and build tools, fetch nothing.
timeout "$(slot 200)" "$python" -m pip install -q --no-deps --no-build-isolation -e . \
  -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90 -Cbuild.verbose=false 2>&1 | tail -5
"$python" -c "import sphere_ops._C as c; assert c.has_cuda(), 'built without CUDA'; print('cuda kernels built, D <=', c.cuda_max_dim(0))" || exit 1
echo "build took $(( $(date +%s) - start )) s"

echo "== GPU tests"
SPHERE_OPS_TEST_DEVICE=cuda timeout "$(slot 100)" "$python" -m pytest -q -m cuda -p no:cacheprovider -n 4 \
  tests/sphere_ops/test_cuda.py 2>&1 | tail -8
tests_rc=${PIPESTATUS[0]}

echo "== training throughput (256 px, bf16; random ViT weights, same compute as DINOv3)"
timeout "$(slot 120)" "$python" bench/train_throughput.py --device cuda --ae-preset B --ae-batch 32 \
  --dit-preset B --dit-batch 256 --warmup 3 --steps 8 $vgg --out "$out/gpu_train.json" 2>&1 | grep -v Warning

echo "== kernel benchmark"
timeout "$(slot 150)" "$python" -m dinosae bench kernels --device cuda --op geodesic_velocity,dist,normalize \
  --rows 65536 --dim 768 --dtype float32,bfloat16 --mode fwd+bwd --repeats 10 --out "$out/gpu_kernels.json" \
  > "$out/gpu_kernels.txt" 2>&1
cat "$out/gpu_kernels.txt"

echo "== summary"
"$python" - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
train = os.path.join(out, "gpu_train.json")
if os.path.exists(train):
    for r in json.load(open(train))["results"]:
        extra = f" sphere_ops share {100 * r['sphere_ops_share']:.2f}%" if "sphere_ops_share" in r else ""
        memory = f" peak {r['peak_GiB']:.1f} GiB" if r.get("peak_GiB") else ""
        print(f"{r['what']:<12} {r['preset']:<3} batch {r['batch']:<4} {r['step_ms']:8.1f} ms/step "
              f"{r['images_per_s']:8.1f} img/s{memory}{extra}")
kernels = os.path.join(out, "gpu_kernels.json")
if os.path.exists(kernels):
    print(f"{'op':<18} {'dtype':<9} {'mode':<8} {'impl':<18} {'ms':>8} {'copy%':>6} {'x compile':>9}")
    for r in json.load(open(kernels))["results"]:
        if r["impl"] in ("sphere_ops:auto", "sphere_ops:triton", "sphere_ops:cpp", "compile", "eager") and not r["error"]:
            print(f"{r['op']:<18} {r['dtype']:<9} {r['mode']:<8} {r['impl']:<18} {r['median_ms']:>8.3f} "
                  f"{100 * r['copy_fraction']:>6.0f} {r['vs_compile']:>9.2f}")
PY
echo "GPU tests exit code: $tests_rc"
exit "$tests_rc"
