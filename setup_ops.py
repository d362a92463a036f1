"""Build and install fastattn: the Python package and its one Paddle custom-op extension.

    python setup_ops.py install

CPU kernels are always built. CUDA kernels are built whenever nvcc is found, for the archs in
FASTATTN_CUDA_ARCHS (comma separated, e.g. "90" or "90,100a"; default: the visible GPU's arch,
else 90). "90" builds sm_90a, the Hopper target whose warpgroup tensor-core instructions the
prefill kernel uses. The same sources build against Paddle 3.x (CPU or GPU) and Paddle GPU 2.6.
"""
import glob
import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home():
    """CUDA's root, or None. Must be settled before paddle.utils.cpp_extension is imported."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var) and os.path.isfile(os.path.join(os.environ[var], "bin", "nvcc")):
            return os.environ[var]
    if os.path.isfile("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if os.path.isdir(os.path.join(root, "include")):
            return root
    return None


def cuda_archs():
    archs = os.environ.get("FASTATTN_CUDA_ARCHS", "").replace(";", ",")
    if not archs:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
            archs = out.split()[0].replace(".", "") if out.strip() else ""
        except (OSError, subprocess.SubprocessError, IndexError):
            archs = ""
    return [a.strip() for a in (archs or "90").split(",") if a.strip()]


def gencode_flags(archs):
    # sm_90a code runs on every sm_90 device and adds wgmma, so plain 90 means 90a.
    archs = ["90a" if a == "90" else a for a in archs]
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in dict.fromkeys(archs)]


CUDA_HOME = find_cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME

from paddle.utils.cpp_extension import CppExtension, CUDAExtension, setup  # noqa: E402
from setuptools import find_packages  # noqa: E402

cc_sources = sorted(glob.glob("custom_ops/csrc/**/*.cc", recursive=True))
cu_sources = sorted(glob.glob("custom_ops/csrc/**/*.cu", recursive=True))
include_dirs = [os.path.join(HERE, "custom_ops", "include")]
common = ["-O3", "-std=c++17", "-DPADDLE_NO_PYTHON"]

if CUDA_HOME:
    archs = cuda_archs()
    # CUDA 13 keeps thrust/cub under include/cccl; Paddle 2.6's headers include <thrust/...>.
    cccl = os.path.join(CUDA_HOME, "include", "cccl")
    if os.path.isdir(cccl):
        include_dirs.append(cccl)
    print(f"fastattn: building CPU and CUDA kernels for sm_{', sm_'.join(archs)} (CUDA at {CUDA_HOME})")
    extension = CUDAExtension(
        sources=cc_sources + cu_sources,
        include_dirs=include_dirs,
        extra_compile_args={
            "cxx": common + ["-DFASTATTN_WITH_CUDA"],
            "nvcc": common + ["-DFASTATTN_WITH_CUDA", "--threads", "2", *gencode_flags(archs)],
        },
        extra_link_args=["-l:libcudart_static.a", "-ldl", "-lrt", "-lpthread"],
    )
else:
    print("fastattn: nvcc not found, building CPU kernels only")
    extension = CppExtension(sources=cc_sources, include_dirs=include_dirs,
                             extra_compile_args={"cxx": common})

setup(
    name="fastattn_ops",
    version="0.1.0",
    description="Quantized paged KV cache and FP8 attention ops for Paddle inference",
    packages=find_packages(include=["fastattn", "fastattn.*"]),
    ext_modules=extension,
)
