"""The CUDA kernels' two-at-a-time conversions (numerics.h `pack2`) against the one-element
conversions they replace in the vector stores and the cache write: every float32 bit pattern."""
import unittest

import numpy as np

from util import from_numpy, places
from fastattn import ops
from fastattn._ext import ops_module


class TestPackedConversions(unittest.TestCase):
    @unittest.skipUnless("gpu" in places(), "needs a GPU")
    def test_exhaustive_on_gpu(self):
        for dtype, result in ops.check_packed_conversions(stride=1).items():
            with self.subTest(dtype=dtype):
                self.assertEqual(result, (0, None))

    def test_needs_a_gpu(self):
        anchor = from_numpy(np.zeros(1, np.float32), "float32", "cpu")
        with self.assertRaisesRegex(Exception, "run the check on a GPU"):
            ops_module().fastattn_check_packed_conversions(anchor, 1)


if __name__ == "__main__":
    unittest.main()
