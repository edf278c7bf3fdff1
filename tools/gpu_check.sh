#!/usr/bin/env bash
# GPU check: predict on a synthetic 1-gigapixel slide on an NVIDIA GPU in fp32, fp16 and int8
# (ONNX Runtime's CUDA provider), and one short MXNet training on the GPU. About 5 minutes.
#
#   tools/gpu_check.sh [--ctx 'gpu(0)'] [--size 32768x32768] [--out gpu-check] [--model DIR]
#   tools/gpu_check.sh --dry-run [--size 2048x2048] ...    # CPU, nothing installed (tests run it)
#
# Needs: python3.11 with the project's dependencies (the project's .venv, or $PF_PYTHON) and the
# built extensions in the checkout; the NVIDIA driver; the package registry (pip). It never
# changes the project's venv: it makes two venvs under $PF_GPU_VENVS (default /tmp/pf-gpu-venvs)
# that see the project's packages through a .pth file placed after their own, so what they
# install comes first:
#   ort: onnxruntime-gpu[cuda,cudnn] (CUDA and cuDNN from pip), and TensorRT if its wheels install;
#   mx:  mxnet-cu117 1.9.1, the newest mxnet-cuXX wheel on PyPI (its kernels stop at Ampere:
#        newer GPUs run it through PTX JIT, or not at all; the report says which), with the
#        CUDA 11 runtime libraries from pip.
# Every other option goes to tools/gpu_check.py; its table is printed and gpu-check.json written.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dry=0
ctx="gpu(0)"
args=()
while (($#)); do
    case "$1" in
        --dry-run) dry=1; ctx="cpu"; shift ;;
        --ctx) ctx="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
py="${PF_PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py="python3.11"; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
check=("$root/tools/gpu_check.py" --ctx "$ctx")

if ((dry)); then
    # The same measurements on the CPU with what is installed: the code path minus the installs.
    exec "$py" "${check[@]}" --mxnet-python "$py" ${args[@]+"${args[@]}"}
fi

venvs="${PF_GPU_VENVS:-/tmp/pf-gpu-venvs}"
base_site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

make_venv() {  # make_venv NAME: a venv that sees the project's packages after its own
    local dir="$venvs/$1"
    if [ ! -x "$dir/bin/python" ]; then
        "$py" -m venv "$dir"
        local site
        site="$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        echo "$base_site" >"$site/zz-prostate-fast-base.pth"
    fi
    echo "$dir/bin/python"
}

pip_quiet() { "$1" -m pip install -q --disable-pip-version-check "${@:2}"; }

t0=$(date +%s)
ort_py="$(make_venv ort)"
echo "gpu_check: installing onnxruntime-gpu into $venvs/ort"
pip_quiet "$ort_py" "onnxruntime-gpu[cuda,cudnn]"
if pip_quiet "$ort_py" "tensorrt-cu12"; then
    echo "gpu_check: TensorRT installed (ONNX Runtime's TensorRT provider may use it)"
else
    echo "gpu_check: TensorRT's wheels do not install here: CUDA provider only"
fi

mx_py="$(make_venv mx)"
echo "gpu_check: installing mxnet-cu117 into $venvs/mx"
mx_ok=1
pip_quiet "$mx_py" "mxnet-cu117==1.9.1" nvidia-cuda-runtime-cu11 nvidia-cublas-cu11 \
    nvidia-cudnn-cu11 nvidia-cufft-cu11 nvidia-curand-cu11 nvidia-cusolver-cu11 \
    nvidia-cusparse-cu11 nvidia-nccl-cu11 nvidia-cuda-nvrtc-cu11 || mx_ok=0
echo "gpu_check: installs took $(($(date +%s) - t0)) s"

# pip's CUDA libraries: onnxruntime-gpu finds its own; MXNet's libmxnet.so needs them on the path.
mx_libs="$("$mx_py" -c 'import glob, sysconfig; print(":".join(sorted(glob.glob(sysconfig.get_paths()["purelib"] + "/nvidia/*/lib"))))')"
wrapper="$venvs/mx/bin/python-cuda"
printf '#!/usr/bin/env bash\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
    "$mx_libs" "$mx_py" >"$wrapper"
chmod +x "$wrapper"
if ((mx_ok)); then mx_arg=(--mxnet-python "$wrapper"); else mx_arg=(); fi
timeout 600 "$ort_py" "${check[@]}" ${mx_arg[@]+"${mx_arg[@]}"} ${args[@]+"${args[@]}"}
echo "gpu_check: total $(($(date +%s) - t0)) s"
