#!/usr/bin/env bash
# One-shot check on a machine with an NVIDIA GPU (about 5 minutes on an H200):
# builds the CUDA extension, runs the GPU tests of the triton and cpp backends
# against the reference, times the kernels, and prints a short table last.
# Results land in ${OUT:-bench/results}/gpu_kernels.json.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
out="${OUT:-bench/results}"
mkdir -p "$out"
python=${PYTHON:-python3}

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$python" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

echo "== build (CUDA extension, sm_90)"
start=$(date +%s)
# --no-deps / --no-build-isolation: use the machine's own torch and build tools, fetch nothing.
"$python" -m pip install -q --no-deps --no-build-isolation -e . \
  -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90 -Cbuild.verbose=false 2>&1 | tail -5
"$python" -c "import sphere_ops._C as c; assert c.has_cuda(), 'built without CUDA'; print('cuda kernels built, D <=', c.cuda_max_dim(0))" || exit 1
echo "build took $(( $(date +%s) - start )) s"

echo "== GPU tests"
SPHERE_OPS_TEST_DEVICE=cuda "$python" -m pytest -q -m cuda -p no:cacheprovider tests/sphere_ops/test_cuda.py 2>&1 | tail -15
tests_rc=${PIPESTATUS[0]}

echo "== kernel benchmark"
"$python" -m dinosae.bench.kernels --device cuda --op normalize,geodesic_velocity,dist,logmap,expmap \
  --rows 65536 --dim 768 --dtype float32,bfloat16 --mode fwd,fwd+bwd --repeats 20 --out "$out/gpu_kernels.json" \
  > "$out/gpu_kernels.txt" 2>&1
cat "$out/gpu_kernels.txt"

echo "== summary (65536 x 768; copy% = useful bandwidth / device-to-device copy)"
"$python" - "$out/gpu_kernels.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["results"]
print(f"{'op':<18} {'dtype':<9} {'mode':<8} {'impl':<18} {'ms':>8} {'copy%':>6} {'x compile':>9}")
for r in rows:
    if r["impl"] in ("sphere_ops:auto", "sphere_ops:triton", "sphere_ops:cpp", "compile") and not r["error"]:
        print(f"{r['op']:<18} {r['dtype']:<9} {r['mode']:<8} {r['impl']:<18} {r['median_ms']:>8.3f} "
              f"{100 * r['copy_fraction']:>6.0f} {r['vs_compile']:>9.2f}")
PY
echo "GPU tests exit code: $tests_rc"
exit "$tests_rc"
