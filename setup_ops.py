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
import sys
import traceback

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


COMMON_FLAGS = ["-O3", "-std=c++17", "-DPADDLE_NO_PYTHON"]
# The host compiler's: no multiply-add contracted behind the sources' back. gcc contracts by default
# wherever the target has fma (aarch64; x86-64 with -mfma, where it fused 12 sites of the CPU
# attention and 15 of merge_attn), which would move the CPU kernels' rounding from host to host:
# the softmax's rounded products, for one, must stay rounded.
HOST_FLAGS = COMMON_FLAGS + ["-ffp-contract=off"]


def include_dirs(cuda_home):
    dirs = [os.path.join(HERE, "custom_ops", "include")]
    # CUDA 13 keeps thrust/cub under include/cccl; Paddle 2.6's headers include <thrust/...>.
    cccl = os.path.join(cuda_home, "include", "cccl") if cuda_home else ""
    if cccl and os.path.isdir(cccl):
        dirs.append(cccl)
    return dirs


def nvcc_flags(archs):
    """nvcc's flags for the CUDA sources (tests/test_wgmma_build.py compiles with them too)."""
    return COMMON_FLAGS + ["-DFASTATTN_WITH_CUDA", *gencode_flags(archs)]


def compile_in_parallel():
    """Has distutils compile an extension's sources side by side, MAX_JOBS at a time (default: one
    per core). Paddle 3 does so itself (it replaces `compile` during its build); Paddle 2.6
    compiles them one after another through a hook that swaps the compiler's executable on the
    shared compiler object, so each source goes to a forked process here, not a thread."""
    from distutils.ccompiler import CCompiler  # setuptools' copy once setuptools is imported
    from distutils.errors import CompileError

    def compile(self, sources, output_dir=None, macros=None, include_dirs=None, debug=0, extra_preargs=None,
                extra_postargs=None, depends=None):
        macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs)
        cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)
        jobs = max(1, int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1))
        pending = [obj for obj in objects if obj in build]
        running, failed = {}, []
        while pending or running:
            if pending and len(running) < jobs:
                obj = pending.pop(0)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:  # the child compiles one source and leaves
                    code = 0
                    try:
                        src, ext = build[obj]
                        self._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)
                    except BaseException:
                        traceback.print_exc()
                        code = 1
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
                running[pid] = obj
            else:
                pid, status = os.wait()
                obj = running.pop(pid, None)
                if obj is not None and status != 0:
                    failed.append(obj)
        if failed:
            raise CompileError(f"failed to compile: {', '.join(failed)}")
        return objects

    CCompiler.compile = compile


def main():
    cuda_home = find_cuda_home()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home

    from paddle.utils.cpp_extension import CppExtension, CUDAExtension, setup
    from setuptools import find_packages

    compile_in_parallel()

    cc_sources = sorted(glob.glob("custom_ops/csrc/**/*.cc", recursive=True))
    cu_sources = sorted(glob.glob("custom_ops/csrc/**/*.cu", recursive=True))
    # build_ext rebuilds only when a file it knows of is newer than the library: without the
    # headers, an edit to a kernel in a .cuh would leave the old library installed.
    headers = sorted(glob.glob("custom_ops/**/*.h", recursive=True) +
                     glob.glob("custom_ops/**/*.cuh", recursive=True))
    if cuda_home:
        archs = cuda_archs()
        print(f"fastattn: building CPU and CUDA kernels for sm_{', sm_'.join(archs)} (CUDA at {cuda_home})")
        extension = CUDAExtension(
            sources=cc_sources + cu_sources,
            depends=headers,
            include_dirs=include_dirs(cuda_home),
            extra_compile_args={
                "cxx": HOST_FLAGS + ["-DFASTATTN_WITH_CUDA"],
                # No nvcc `--threads`: the sources already compile side by side (compile_in_parallel),
                # and threads on top oversubscribed CI's 2 cores (a build took 4m38s with them, 3m48s-3m56s
                # without).
                "nvcc": nvcc_flags(archs),
            },
            extra_link_args=["-l:libcudart_static.a", "-ldl", "-lrt", "-lpthread"],
        )
    else:
        print("fastattn: nvcc not found, building CPU kernels only")
        extension = CppExtension(sources=cc_sources, depends=headers, include_dirs=include_dirs(None),
                                 extra_compile_args={"cxx": HOST_FLAGS})

    setup(
        name="fastattn_ops",
        version="0.1.0",
        description="Quantized paged KV cache and FP8 attention ops for Paddle inference",
        packages=find_packages(include=["fastattn", "fastattn.*"]),
        ext_modules=extension,
    )


if __name__ == "__main__":
    main()
