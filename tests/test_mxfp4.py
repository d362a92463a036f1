"""quant_mxfp4 / dequant_mxfp4 bit for bit against fastattn.reference, special values, and the
exhaustive check of the software e2m1 conversion."""
import itertools
import unittest

import numpy as np

from util import from_numpy, places, seeded_rng, to_numpy
from fastattn import ops
from fastattn import reference as ref

TIES = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])


def as_dtype(values, dtype):
    """float32 values rounded to dtype (what the kernel will read)."""
    values = np.asarray(values, np.float32)
    if dtype == "float32":
        return values
    return ref.half_bits_to_float(ref.to_half_bits(values, dtype), dtype)


def quantize(x, dtype, place):
    packed, scales = ops.quant_mxfp4(from_numpy(x, dtype, place))
    return to_numpy(packed), to_numpy(scales)


class TestQuantMxfp4(unittest.TestCase):
    def check_against_reference(self, x, dtype, place):
        x = as_dtype(x, dtype)
        packed, scales = quantize(x, dtype, place)
        want_packed, want_scales = ref.quant_mxfp4(x)
        np.testing.assert_array_equal(scales, want_scales)
        np.testing.assert_array_equal(packed, want_packed)
        return packed, scales

    def test_random(self):
        for place, dtype, shape in itertools.product(places(), ("bfloat16", "float16", "float32"),
                                                     ((5, 96), (2, 3, 32), (1, 4096))):
            with self.subTest(place=place, dtype=dtype, shape=shape):
                rng = seeded_rng(self, place, dtype, shape)
                spread = 3.0 if dtype == "float16" else 30.0  # fp16 has a narrow exponent range
                x = rng.standard_normal(shape) * np.exp(rng.uniform(-spread, spread, shape[:-1] + (1,)))
                packed, scales = self.check_against_reference(x, dtype, place)
                self.assertEqual(packed.shape, shape[:-1] + (shape[-1] // 2,))
                self.assertEqual(scales.shape, shape[:-1] + (shape[-1] // 32,))

    def test_ties_round_to_even(self):
        for place, k in itertools.product(places(), (-10, 0, 7)):
            with self.subTest(place=place, k=k):
                block = np.zeros(32, np.float32)
                block[0] = 6.0 * 2.0 ** k                       # fixes the scale at 2^k
                block[1:8], block[8:15] = TIES * 2.0 ** k, -TIES * 2.0 ** k
                packed, scales = self.check_against_reference(block[None], "float32", place)
                self.assertEqual(scales[0, 0], 127 + k)
                codes = np.stack([packed[0] & 0xF, packed[0] >> 4], axis=-1).reshape(-1)
                # 0.25->0, 0.75->1.0, 1.25->1.0, 1.75->2.0, 2.5->2.0, 3.5->4.0, 5->4.0: even codes
                np.testing.assert_array_equal(codes[1:8], [0, 2, 2, 4, 4, 6, 6])
                np.testing.assert_array_equal(codes[8:15], [8, 10, 10, 12, 12, 14, 14])

    def test_special_values(self):
        for place, dtype in itertools.product(places(), ("float32", "bfloat16")):
            with self.subTest(place=place, dtype=dtype):
                x = np.zeros((5, 32), np.float32)
                x[0, 1] = -0.0                                   # zero block: floor scale, signed zero
                x[1] = np.float32(1e-40) * np.arange(32)         # fp32 subnormals (bf16 too)
                x[1, 3] = -x[1, 3]
                x[2, 0], x[2, 1], x[2, 2] = np.inf, -np.inf, 1.0  # inf block
                x[3, 5] = np.nan                                 # NaN block
                x[3, 6] = 100.0
                x[4] = np.linspace(-7, 7, 32)                    # saturation just past 6
                x[4, 0] = 6.0
                packed, scales = self.check_against_reference(x, dtype, place)
                codes = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(5, 32)
                self.assertEqual(scales[0, 0], 1)                # 2^-126: amax floored to 6 * 2^-126
                self.assertEqual(codes[0, 1], 8)                 # -0 keeps its sign
                self.assertEqual(scales[2, 0], 254)              # inf: e = 127
                self.assertEqual(codes[2, 0], 7)
                self.assertEqual(codes[2, 1], 15)
                self.assertEqual(scales[3, 0], 255)              # NaN block
                self.assertFalse(codes[3].any())
                back = to_numpy(ops.dequant_mxfp4(from_numpy(packed, "uint8", place),
                                                  from_numpy(scales, "uint8", place)))
                self.assertTrue(np.isnan(back[3]).all())
                self.assertTrue(np.isposinf(back[2, 0]) and np.isneginf(back[2, 1]))
                self.assertFalse(np.isnan(np.delete(back, 3, axis=0)).any())

    def test_dequant_matches_reference(self):
        for place, out_dtype in itertools.product(places(), ("float32", "bfloat16", "float16")):
            with self.subTest(place=place, out_dtype=out_dtype):
                rng = seeded_rng(self, place, out_dtype)
                x = (rng.standard_normal((6, 64)) * 3).astype(np.float32)
                packed, scales = ref.quant_mxfp4(x)
                got = to_numpy(ops.dequant_mxfp4(from_numpy(packed, "uint8", place),
                                                 from_numpy(scales, "uint8", place), out_dtype=out_dtype))
                want = ref.dequant_mxfp4(packed, scales)
                if out_dtype == "float32":
                    np.testing.assert_array_equal(got, want.astype(np.float32))
                else:
                    np.testing.assert_array_equal(got, ref.to_half_bits(want.astype(np.float32), out_dtype))
                # and the round trip is within half an e2m1 step of the block scale
                step = 2.0 ** (scales.astype(np.float64) - 127)
                self.assertTrue((np.abs(want - x) <= np.repeat(step, 32, axis=-1) + 1e-30).all())

    def test_bad_input(self):
        x = from_numpy(np.zeros((4, 48), np.float32), "float32")
        with self.assertRaisesRegex(ValueError, r"x: the last dimension must be a multiple of 32, got shape \[4, 48\]"):
            ops.quant_mxfp4(x)
        with self.assertRaisesRegex(TypeError, "x: expected dtype bfloat16 or float16 or float32, got int32"):
            ops.quant_mxfp4(from_numpy(np.zeros((4, 32), np.int32)))
        packed = from_numpy(np.zeros((4, 16), np.uint8))
        with self.assertRaisesRegex(ValueError, r"scales: expected shape \[4, 1\], got \[4, 2\]"):
            ops.dequant_mxfp4(packed, from_numpy(np.zeros((4, 2), np.uint8)))
        with self.assertRaisesRegex(ValueError, "out_dtype: expected one of"):
            ops.dequant_mxfp4(packed, from_numpy(np.zeros((4, 1), np.uint8)), out_dtype="int8")
        with self.assertRaisesRegex(TypeError, "packed: expected dtype uint8"):
            ops.dequant_mxfp4(from_numpy(np.zeros((4, 16), np.int32)), from_numpy(np.zeros((4, 1), np.uint8)))


class TestViewsAtAnOffset(unittest.TestCase):
    def test_misaligned_views(self):
        """A contiguous view that starts an element into its allocation: the CPU kernels take it as
        it is; the GPU kernels load 16 (quant) or 4 (dequant) bytes at a time and refuse it."""
        rng = seeded_rng(self)
        x = as_dtype(rng.standard_normal(65) * 10, "bfloat16")
        codes = rng.integers(0, 256, 17, dtype=np.uint8)
        for place in places():
            with self.subTest(place=place):
                x_view = from_numpy(x, "bfloat16", place)[1:]
                packed_view = from_numpy(codes, "uint8", place)[1:]
                scales = from_numpy(np.uint8([130]), "uint8", place)
                if place == "gpu":
                    self.assertEqual(x_view.data_ptr() % 16, 2, "a view one element in")
                    with self.assertRaisesRegex(ValueError, "x: the GPU kernels read 16 bytes at a time"):
                        ops.quant_mxfp4(x_view)
                    with self.assertRaisesRegex(ValueError, "packed: the GPU kernels read 4 bytes at a time"):
                        ops.dequant_mxfp4(packed_view, scales)
                    continue
                packed, block_scales = ops.quant_mxfp4(x_view)
                want_packed, want_scales = ref.quant_mxfp4(x[1:])
                np.testing.assert_array_equal(to_numpy(packed), want_packed)
                np.testing.assert_array_equal(to_numpy(block_scales), want_scales)
                np.testing.assert_array_equal(to_numpy(ops.dequant_mxfp4(packed_view, scales)),
                                              ref.dequant_mxfp4(codes[1:], np.uint8([130])).astype(np.float32))


class TestE2m1Conversion(unittest.TestCase):
    def test_sampled_on_cpu(self):
        """Every 4099th float32 bit pattern (about a million, all exponents and signs)."""
        self.assertEqual(ops.check_e2m1_conversion("cpu", stride=4099), (0, None))

    @unittest.skipUnless("gpu" in places(), "needs a GPU")
    def test_exhaustive_on_gpu(self):
        """All 2^32 float32 bit patterns; every bf16 and fp16 pattern times every block multiplier
        through the packed fp16 path."""
        for dtype in ("float32", "bfloat16", "float16"):
            with self.subTest(dtype=dtype):
                self.assertEqual(ops.check_e2m1_conversion("gpu", stride=1, input_dtype=dtype), (0, None))

    def test_16bit_path_needs_gpu(self):
        with self.assertRaisesRegex(ValueError, "input_dtype bfloat16: the 16-bit path is the GPU kernel's"):
            ops.check_e2m1_conversion("cpu", input_dtype="bfloat16")


if __name__ == "__main__":
    unittest.main()
