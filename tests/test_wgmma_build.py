"""The wgmma prefill kernels as ptxas builds them for sm_90a. Where a kernel needs more registers
than its warpgroups were given, ptxas does not fail: it runs every wgmma synchronously and says so
only under -Xptxas -v (warnings C7512 and C7514), and the kernel loses 15% or more. Runs wherever
nvcc is found (CI builds the CUDA sources too); no GPU needed."""
import os
import re
import subprocess
import tempfile
import unittest

import util  # noqa: F401  (puts the repository root on the path)
from setup_ops import HERE as ROOT, find_cuda_home, include_dirs, nvcc_flags

# (head_dim, paged, FP8 q, per-token scales, FP8 P V, small blocks, widened before): FP8 and 16-bit q at
# every head_dim, and over a block_wise_fp8 cache (paged) but for a 16-bit q at head_dim 256; in blocks of
# a quarter tile FP8 q over block_wise_fp8 at head_dim 128 and over cache_fp8 at 256; FP8 P V (fp8_pv) at
# head_dim 64 and 128 with FP8 q, contiguous and over both caches; with K / V widened before the kernel:
# FP8 q at head_dim 128 over contiguous keys and over block_wise_fp8 (max_seqlen_kv), in blocks of a
# quarter tile too, and a 16-bit q at every head_dim over contiguous keys and both caches.
KERNELS = [(d, paged, fp8_q, "false", "false", "false", "false") for d in (64, 128, 256) for paged in ("false", "true")
           for fp8_q in ("true", "false")]
KERNELS += [(d, "true", fp8_q, "true", "false", "false", "false") for d in (64, 128, 256) for fp8_q in ("true", "false")
            if (d, fp8_q) != (256, "false")]
KERNELS += [(128, "true", "true", "true", "false", "true", "false"), (256, "true", "true", "false", "false", "true", "false")]
KERNELS += [(d, paged, "true", scales, "true", "false", "false") for d in (64, 128)
            for paged, scales in (("false", "false"), ("true", "false"), ("true", "true"))]
KERNELS += [(128, "true", "true", "true", "false", small, "true") for small in ("false", "true")]
KERNELS += [(128, "false", "true", "false", "false", "false", "true")]
KERNELS += [(d, paged, "false", scales, "false", "false", "true") for d in (64, 128, 256)
            for paged, scales in (("false", "false"), ("true", "false"), ("true", "true"))]
CUDA_HOME = find_cuda_home()


class TestWgmmaBuild(unittest.TestCase):
    @unittest.skipUnless(CUDA_HOME, "needs nvcc")
    def test_no_serialized_wgmma(self):
        includes = [f"-I{d}" for d in include_dirs(CUDA_HOME) + [os.path.join(ROOT, "custom_ops", "csrc")]]
        head_dims = sorted({d for d, *_ in KERNELS})
        with tempfile.TemporaryDirectory() as tmp:
            builds = {}  # a unit per head_dim, compiled side by side (as setup_ops.py builds them)
            for head_dim in head_dims:
                kernels = [k for k in KERNELS if k[0] == head_dim]
                source = '#include "attention/attention_wgmma.cuh"\nnamespace fastattn { namespace attention_gpu {\n'
                source += "".join(
                    f"template __global__ void attention_wgmma_kernel<{d}, {paged}, {fp8_q}, {scales}, {fp8_pv}, {small}, {copied}>(const AttentionParams, const __grid_constant__ PrefillTensorMaps);\n"
                    for d, paged, fp8_q, scales, fp8_pv, small, copied in kernels)
                source += "}}\n"
                unit = os.path.join(tmp, f"wgmma_kernels_{head_dim}.cu")
                with open(unit, "w") as f:
                    f.write(source)
                command = [os.path.join(CUDA_HOME, "bin", "nvcc"), *nvcc_flags(["90"]), *includes, "-Xptxas", "-v",
                           "-c", unit, "-o", unit + ".o"]
                builds[head_dim] = (len(kernels), subprocess.Popen(command, stdout=subprocess.PIPE,
                                                                  stderr=subprocess.STDOUT, text=True))
            logs = {d: (count, process.communicate()[0], process.returncode) for d, (count, process) in builds.items()}
        for head_dim, (count, log, returncode) in logs.items():
            with self.subTest(head_dim=head_dim):
                self.assertEqual(returncode, 0, log[-3000:])
                compiled = re.findall(r"Compiling entry function '(\w*attention_wgmma_kernel\w*)'", log)
                self.assertEqual(len(compiled), count, log[-3000:])
                serialized = [line for line in log.splitlines() if "C7512" in line or "C7514" in line or "serialized" in line]
                self.assertEqual(serialized, [])


if __name__ == "__main__":
    unittest.main()
