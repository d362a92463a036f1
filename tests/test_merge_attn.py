"""merge_attn_states against the float64 reference; the fused FP8 output bit for bit."""
import itertools
import unittest

import numpy as np

from util import float_values, from_numpy, places, rel_err, seeded_rng, to_numpy
from fastattn import ops
from fastattn import reference as ref

# ||out - ref|| / ||ref|| bounds by output dtype: the merge is fp32 arithmetic (error ~1e-7), so
# the output rounding dominates: 2^-9 relative for bf16, 2^-12 for fp16, a few fp32 ulps.
BOUNDS = {"bfloat16": 4e-3, "float16": 5e-4, "float32": 2e-6}


def make_inputs(rng, tokens, heads, head_dim, dtype, place):
    """Random outputs exactly representable in dtype, lses spread over +-20."""
    def values(shape):
        if dtype == "float32":
            return rng.standard_normal(shape).astype(np.float32)
        return ref.random_half(rng, shape, dtype)[0]
    a, b = values((tokens, heads, head_dim)), values((tokens, heads, head_dim))
    la = rng.uniform(-20, 20, (heads, tokens)).astype(np.float32)
    lb = rng.uniform(-20, 20, (heads, tokens)).astype(np.float32)
    return a, la, b, lb


def run(a, la, b, lb, dtype, place, **kwargs):
    tensors = [from_numpy(a, dtype, place), from_numpy(la, "float32", place),
               from_numpy(b, dtype, place), from_numpy(lb, "float32", place)]
    if "output_scale" in kwargs:
        kwargs["output_scale"] = from_numpy(np.float32([kwargs["output_scale"]]), "float32", place)
    out, lse = ops.merge_attn_states(*tensors, **kwargs)
    return out, to_numpy(lse)




class TestMerge(unittest.TestCase):
    def test_random_against_reference(self):
        for place, dtype, head_dim, out_dtype in itertools.product(
                places(), ("bfloat16", "float16", "float32"), (64, 128, 256, 72, 13), (None, "float32")):
            with self.subTest(place=place, dtype=dtype, head_dim=head_dim, out_dtype=out_dtype):
                rng = seeded_rng(self, place, dtype, head_dim, out_dtype)
                a, la, b, lb = make_inputs(rng, 37, 3, head_dim, dtype, place)
                out, lse = run(a, la, b, lb, dtype, place, out_dtype=out_dtype)
                want_out, want_lse = ref.merge_attn_states(a, la, b, lb)
                got = float_values(out)
                self.assertEqual(list(out.shape), [37, 3, head_dim])
                self.assertLess(rel_err(got, want_out), BOUNDS[out_dtype or dtype])
                np.testing.assert_allclose(lse, want_lse, rtol=1e-6, atol=1e-5)

    def test_empty_sides(self):
        """+inf counts as -inf; an empty side contributes nothing even if its output is NaN; one
        side empty passes the other through bit for bit; both empty give 0 and -inf."""
        for place, dtype in itertools.product(places(), ("bfloat16", "float32")):
            with self.subTest(place=place, dtype=dtype):
                rng = seeded_rng(self, place, dtype)
                a, la, b, lb = make_inputs(rng, 6, 2, 64, dtype, place)
                a[0, 0, 0] = -0.0
                la[:, 0], lb[:, 0] = 5.0, -np.inf      # suffix empty: prefix exactly
                b[0] = np.nan
                la[:, 1], lb[:, 1] = np.inf, 3.0       # prefix "+inf" = empty: suffix exactly
                a[1] = np.nan
                la[:, 2], lb[:, 2] = -np.inf, np.inf   # both empty
                a[2], b[2] = np.nan, np.inf
                la[:, 3], lb[:, 3] = 80.0, -80.0       # extreme but finite: no overflow
                out, lse = run(a, la, b, lb, dtype, place)
                got = to_numpy(out)
                want_bits = [from_numpy(x, dtype, "cpu") for x in (a, b)]
                np.testing.assert_array_equal(got[0], to_numpy(want_bits[0])[0])
                np.testing.assert_array_equal(got[1], to_numpy(want_bits[1])[1])
                self.assertTrue((float_values(out)[2] == 0).all())
                np.testing.assert_array_equal(lse[:, 0], 5.0)
                np.testing.assert_array_equal(lse[:, 1], 3.0)
                self.assertTrue(np.isneginf(lse[:, 2]).all())
                self.assertFalse(np.isnan(float_values(out)[3:]).any() or np.isnan(lse).any())
                want_out, want_lse = ref.merge_attn_states(a, la, b, lb)
                self.assertLess(rel_err(float_values(out)[3:], want_out[3:]), BOUNDS[dtype])
                np.testing.assert_allclose(lse[:, 3:], want_lse[:, 3:], rtol=1e-6)

    def test_fp8_output_is_fused_and_exact(self):
        """The FP8 output equals e4m3(x * (1/scale)) of the op's own fp32 result, bit for bit, and
        lands within an e4m3 rounding of the float64 reference."""
        for place, dtype, head_dim, scale in itertools.product(
                places(), ("bfloat16", "float16"), (128, 40, 13), (0.0125, 3.0)):
            with self.subTest(place=place, dtype=dtype, head_dim=head_dim, scale=scale):
                rng = seeded_rng(self, place, dtype, head_dim, scale)
                a, la, b, lb = make_inputs(rng, 29, 4, head_dim, dtype, place)
                a *= 4.0  # some values past 448 * 0.0125 exercise the clamp
                out8, lse8 = run(a, la, b, lb, dtype, place, output_scale=scale)
                out32, lse32 = run(a, la, b, lb, dtype, place, out_dtype="float32")
                self.assertIn(str(out8.dtype).replace("paddle.", ""), ("float8_e4m3fn", "uint8"))
                np.testing.assert_array_equal(to_numpy(out8), ref.quantize_fp8_output(to_numpy(out32), scale))
                np.testing.assert_array_equal(lse8, lse32)
                want, _ = ref.merge_attn_states(a, la, b, lb)
                got = ref.e4m3_to_float(to_numpy(out8)) * scale
                clamped = np.clip(want, -448 * scale, 448 * scale)
                self.assertLess(rel_err(got, clamped), 0.04)  # e4m3: 3 mantissa bits

    def test_bad_input(self):
        rng = seeded_rng(self)
        a, la, b, lb = make_inputs(rng, 5, 3, 64, "bfloat16", "cpu")
        good = dict(prefix_output=from_numpy(a, "bfloat16"), prefix_lse=from_numpy(la, "float32"),
                    suffix_output=from_numpy(b, "bfloat16"), suffix_lse=from_numpy(lb, "float32"))
        cases = [
            (TypeError, "prefix_output: expected dtype bfloat16 or float16 or float32, got int32",
             dict(prefix_output=from_numpy(np.zeros((5, 3, 64), np.int32)))),
            (TypeError, "suffix_output: expected dtype bfloat16, got float16", dict(suffix_output=from_numpy(b, "float16"))),
            (ValueError, r"suffix_output: expected shape \[5, 3, 64\]", dict(suffix_output=from_numpy(b[:4], "bfloat16"))),
            (ValueError, r"prefix_lse: expected \[heads, tokens\] = \[3, 5\], got \[5, 3\] \(that is \[tokens, heads\]",
             dict(prefix_lse=from_numpy(la.T.copy(), "float32"))),
            (TypeError, "suffix_lse: expected dtype float32, got bfloat16", dict(suffix_lse=from_numpy(lb, "bfloat16"))),
            (ValueError, r"output_scale: expected one element, got shape \[2\]",
             dict(output_scale=from_numpy(np.float32([1, 2]), "float32"))),
            (TypeError, "output_scale: expected dtype float32", dict(output_scale=from_numpy(np.float32([1]), "bfloat16"))),
            (ValueError, "out_dtype: with output_scale the output is fp8",
             dict(output_scale=from_numpy(np.float32([1]), "float32"), out_dtype="bfloat16")),
            (ValueError, "out_dtype: expected one of", dict(out_dtype="int8")),
        ]
        for error, message, override in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(error, message):
                    ops.merge_attn_states(**{**good, **override})

    @unittest.skipUnless("gpu" in places(), "needs a GPU")
    def test_scale_on_wrong_device(self):
        rng = seeded_rng(self)
        a, la, b, lb = make_inputs(rng, 5, 3, 64, "bfloat16", "gpu")
        with self.assertRaisesRegex(ValueError, "output_scale on cpu"):
            ops.merge_attn_states(
                from_numpy(a, "bfloat16", "gpu"), from_numpy(la, "float32", "gpu"), from_numpy(b, "bfloat16", "gpu"),
                from_numpy(lb, "float32", "gpu"), output_scale=from_numpy(np.float32([1.0]), "float32", "cpu"))


if __name__ == "__main__":
    unittest.main()


class TestQuantizeFp8(unittest.TestCase):
    """The unfused second step (merge to bf16, then quantize) that the fused merge replaces."""

    def test_bit_exact(self):
        for place, dtype, shape in itertools.product(places(), ("bfloat16", "float16", "float32"),
                                                     ((7, 3, 64), (5, 13))):
            with self.subTest(place=place, dtype=dtype, shape=shape):
                rng = seeded_rng(self, place, dtype, shape)
                x = rng.standard_normal(shape).astype(np.float32) * 30
                x.reshape(-1)[:3] = [np.nan, np.inf, -1e6]
                if dtype != "float32":
                    x = ref.half_bits_to_float(ref.to_half_bits(x, dtype), dtype)
                out = ops.quantize_fp8(from_numpy(x, dtype, place), from_numpy(np.float32([0.07]), "float32", place))
                np.testing.assert_array_equal(to_numpy(out), ref.quantize_fp8_output(x, 0.07))

    def test_bad_input(self):
        x = from_numpy(np.zeros((4, 8), np.float32), "float32")
        with self.assertRaisesRegex(ValueError, r"scale: expected one element, got shape \[2\]"):
            ops.quantize_fp8(x, from_numpy(np.float32([1, 2]), "float32"))
        with self.assertRaisesRegex(TypeError, "x: expected dtype"):
            ops.quantize_fp8(from_numpy(np.zeros(4, np.int32)), from_numpy(np.float32([1]), "float32"))
