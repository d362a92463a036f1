"""The build without nvcc (CPU kernels only): setup_ops.py compiles the same .cc sources without
FASTATTN_WITH_CUDA, where every CUDA entry point is nullptr. CI's machines have nvcc, so without
this check a source that only compiles beside the CUDA declarations would go unnoticed. Compiles
each source for syntax and types only (no code), against the installed Paddle's headers."""
import glob
import os
import shutil
import subprocess
import sysconfig
import unittest
from concurrent.futures import ThreadPoolExecutor

import util  # noqa: F401  (puts the repository root on the path)
from setup_ops import HOST_FLAGS, HERE as ROOT, include_dirs

CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def paddle_includes():
    from paddle.utils.cpp_extension import extension_utils
    return extension_utils.find_paddle_includes()


class TestCpuOnlyBuild(unittest.TestCase):
    @unittest.skipUnless(CXX, "needs a C++ compiler")
    def test_sources_compile_without_cuda(self):
        sources = sorted(glob.glob(os.path.join(ROOT, "custom_ops", "csrc", "**", "*.cc"), recursive=True))
        includes = [f"-I{d}" for d in include_dirs(None) + paddle_includes() + [sysconfig.get_paths()["include"]]]
        # The defines Paddle's cpp_extension adds to a CPU source.
        defines = ["-DPADDLE_WITH_CUSTOM_KERNEL", "-DPADDLE_EXTENSION_NAME=fastattn_ops", "-D_GLIBCXX_USE_CXX11_ABI=1"]

        def check(source):
            return subprocess.run([CXX, *HOST_FLAGS, *defines, *includes, "-fsyntax-only", source],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # side by side, a core each
            results = list(pool.map(check, sources))
        self.assertGreater(len(results), 0)
        for source, result in zip(sources, results):
            with self.subTest(source=os.path.relpath(source, ROOT)):
                self.assertEqual(result.returncode, 0, result.stdout[-3000:])


if __name__ == "__main__":
    unittest.main()
