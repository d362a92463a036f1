"""write_cache_kv and append_cache_kv_c8 against fastattn.reference, bit for bit."""
import itertools
import unittest

import numpy as np

from util import (PagedBatch, assert_bits_equal, cu_seqlens, from_numpy, places, random_bits16,
                  random_bytes, seeded_rng, to_numpy)
from fastattn import ops
from fastattn import reference as ref
from fastattn.cache import QUANT_BOUND
from fastattn.tensors import fp8_dtype

HEAD_DIMS = (64, 128, 256)
BLOCK_SIZES = (16, 32, 64, 128)


class CacheCase:
    """One layer's poisoned cache on a device, mirrored by the numpy reference."""

    def __init__(self, rng, place, quant, head_dim, block_size, dtype, final_lens, heads=2,
                 scale_dtype="float32", cache_dtype="uint8"):
        self.rng, self.place, self.quant, self.dtype = rng, place, quant, dtype
        self.heads, self.head_dim, self.scale_dtype = heads, head_dim, scale_dtype
        self.batch = PagedBatch(rng, block_size, final_lens)
        shape = (self.batch.num_blocks, heads, block_size, head_dim)
        if quant == "none":
            self.cache_dtype = dtype
            self.np_caches = [random_bits16(rng, shape, dtype) for _ in range(2)]
        else:
            self.cache_dtype = cache_dtype
            self.np_caches = [random_bytes(rng, shape) for _ in range(2)]
        self.caches = [from_numpy(c, self.cache_dtype, place) for c in self.np_caches]
        self.block_tables = from_numpy(self.batch.block_tables, None, place)
        self.np_tables = [None, None]
        self.tables = [None, None]
        self.static = [None, None]
        self.write_scales = {}
        self.read_scales = {}
        if quant == "block_wise_fp8":
            self.np_tables = [self._as_scale_dtype(rng.uniform(1, 9, shape[:3])) for _ in range(2)]
            self.tables = [from_numpy(t, scale_dtype, place) for t in self.np_tables]
            self.write_scales = dict(k_scale_cache=self.tables[0], v_scale_cache=self.tables[1])
            self.read_scales = self.write_scales
        elif quant != "none":
            absmax = rng.uniform(2.0, 6.0, size=(2, heads)).astype(np.float32)
            quant_mult = self._scale_values(np.float32(QUANT_BOUND[quant]) / absmax)
            dequant = self._scale_values(np.float32(1.0) / quant_mult)
            self.static = [quant_mult, dequant]
            self.write_scales = dict(k_quant_scale=from_numpy(quant_mult[0], scale_dtype, place),
                                     v_quant_scale=from_numpy(quant_mult[1], scale_dtype, place))
            self.read_scales = dict(k_dequant_scale=from_numpy(dequant[0], scale_dtype, place),
                                    v_dequant_scale=from_numpy(dequant[1], scale_dtype, place))

    def _scale_values(self, x):
        """float32 scales as the kernel will read them from a `scale_dtype` tensor."""
        x = np.asarray(x, np.float32)
        if self.scale_dtype == "bfloat16":
            return ref.half_bits_to_float(ref.to_half_bits(x, "bfloat16"), "bfloat16")
        return x

    def _as_scale_dtype(self, x):
        """A numpy scale table in the representation the reference keeps (bf16 as bits)."""
        x = np.asarray(x, np.float32)
        return ref.to_half_bits(x, "bfloat16") if self.scale_dtype == "bfloat16" else x

    def write(self, k_vals, v_vals, cached, new):
        """Writes `new[b]` tokens after `cached[b]` for every sequence; returns the op's outputs."""
        cu = cu_seqlens(new)
        args = [from_numpy(x, self.dtype, self.place) for x in (
            ref.to_half_bits(k_vals, self.dtype), ref.to_half_bits(v_vals, self.dtype))]
        outs = ops.write_cache_kv(
            *args, self.caches[0], self.caches[1], self.block_tables,
            from_numpy(cu, None, self.place), from_numpy(np.int32(cached), None, self.place),
            cache_quant_type=self.quant, **self.write_scales)
        expected = ref.write_cache_kv(
            k_vals, v_vals, *self.np_caches, self.batch.block_tables, cu, np.int32(cached),
            self.quant, k_quant_scale=self.static[0][0] if self.static[0] is not None else None,
            v_quant_scale=self.static[0][1] if self.static[0] is not None else None,
            k_scale_cache=self.np_tables[0], v_scale_cache=self.np_tables[1], dtype=self.dtype)
        self.np_caches = list(expected[:2])
        if self.quant == "block_wise_fp8":
            self.np_tables = list(expected[2:])
        return outs

    def device_state(self):
        tensors = self.caches + [t for t in self.tables if t is not None]
        return [to_numpy(t) for t in tensors]

    def expected_state(self):
        return self.np_caches + [t for t in self.np_tables if t is not None]

    def gather(self, cached, active, rows_per_seq):
        """Gathers the cached prefix of active sequences into poisoned k/v outputs; returns
        (device k, device v, reference k, reference v) as uint16 bits."""
        cu_k = cu_seqlens(rows_per_seq)
        shape = (int(cu_k[-1]), self.heads, self.head_dim)
        poison = [random_bits16(self.rng, shape, self.dtype) for _ in range(2)]
        outs = [from_numpy(p, self.dtype, self.place) for p in poison]
        returned = ops.append_cache_kv_c8(
            self.caches[0], self.caches[1], outs[0], outs[1], self.block_tables,
            from_numpy(np.int32(active), None, self.place), from_numpy(np.int32(cached), None, self.place),
            from_numpy(cu_k, None, self.place), self.quant, **self.read_scales)
        expected = ref.append_cache_kv(
            *self.np_caches, *poison, self.batch.block_tables, np.int32(active), np.int32(cached),
            cu_k, self.quant, k_dequant_scale=self.static[1][0] if self.static[1] is not None else None,
            v_dequant_scale=self.static[1][1] if self.static[1] is not None else None,
            k_scale_cache=self.np_tables[0], v_scale_cache=self.np_tables[1], dtype=self.dtype)
        return to_numpy(returned[0]), to_numpy(returned[1]), expected[0], expected[1]


# Three steps over four sequences: a prefill in chunks, decodes that land in a partly filled
# block, a sequence that stays idle throughout and one that goes idle in the last step.
def steps(block_size):
    return [[block_size + 3, 5, 0, 1], [1, 1, 0, block_size], [block_size + 1, 1, 0, 0]]


def run_round_trip(test, place, quant, head_dim, block_size, dtype, **case_kwargs):
    rng = seeded_rng(test, place, quant, head_dim, block_size, dtype, case_kwargs)
    plan = steps(block_size)
    final_lens = [sum(s[b] for s in plan) for b in range(4)]
    case = CacheCase(rng, place, quant, head_dim, block_size, dtype, final_lens, **case_kwargs)
    cached = [0, 0, 0, 0]
    for step, new in enumerate(plan):
        shape = (sum(new), case.heads, head_dim)
        k_vals, _ = ref.random_half(rng, shape, dtype, scale=3.0)
        v_vals, _ = ref.random_half(rng, shape, dtype, scale=0.5)
        outs = case.write(k_vals, v_vals, cached, new)
        test.assertEqual(len(outs), 4 if quant == "block_wise_fp8" else 2)
        for i, (got, want) in enumerate(zip(case.device_state(), case.expected_state())):
            assert_bits_equal(test, got, want, f"step {step} cache tensor {i}")
        # this step's view: prefix (cached) + new tokens, the prefix gathered from the cache
        rows = [c + n for c, n in zip(cached, new)]
        k_got, v_got, k_want, v_want = case.gather(cached, new, rows)
        assert_bits_equal(test, k_got, k_want, f"step {step} gathered k")
        assert_bits_equal(test, v_got, v_want, f"step {step} gathered v")
        cached = [c + n for c, n in zip(cached, new)]
    # after the last step, gather every sequence's whole cache (a prefix-cache hit)
    k_got, v_got, k_want, v_want = case.gather(cached, [1, 1, 1, 1], [c + 1 for c in cached])
    assert_bits_equal(test, k_got, k_want, "full gather k")
    assert_bits_equal(test, v_got, v_want, "full gather v")
    # the cache dequantizes to roughly what was written (a sanity check on the reference itself)
    if quant != "none":
        stored = ref.dequantized_cache(case.np_caches[0], quant,
                                       case.static[1][0] if case.static[1] is not None else None,
                                       case.np_tables[0], dtype)
        test.assertTrue(np.isfinite(stored[case.batch.block_tables[0, 0]]).all())


class TestRoundTrip(unittest.TestCase):
    def test_every_quant_type_head_dim_block_size_and_dtype(self):
        for place, quant, head_dim, block_size, dtype in itertools.product(
                places(), ref.QUANT_TYPES, HEAD_DIMS, BLOCK_SIZES, ("bfloat16", "float16")):
            with self.subTest(place=place, quant=quant, head_dim=head_dim, block_size=block_size,
                              dtype=dtype):
                run_round_trip(self, place, quant, head_dim, block_size, dtype)

    def test_bf16_scales(self):
        for place, quant in itertools.product(places(), ("cache_int8", "cache_fp8", "block_wise_fp8")):
            with self.subTest(place=place, quant=quant):
                run_round_trip(self, place, quant, 128, 64, "bfloat16", scale_dtype="bfloat16")

    def test_more_heads(self):
        for place, quant in itertools.product(places(), ref.QUANT_TYPES):
            with self.subTest(place=place, quant=quant):
                run_round_trip(self, place, quant, 64, 16, "float16", heads=5)

    @unittest.skipIf(fp8_dtype() is None, "this Paddle has no float8_e4m3fn dtype")
    def test_float8_dtype_caches(self):
        for place, quant in itertools.product(places(), ("cache_fp8", "block_wise_fp8")):
            with self.subTest(place=place, quant=quant):
                run_round_trip(self, place, quant, 128, 32, "bfloat16", cache_dtype="float8_e4m3fn")


class TestAdversarialRows(unittest.TestCase):
    """Special rows through the real kernels: all-zero, huge, NaN, inf, ties."""

    def write_rows(self, place, quant, rows, dtype="bfloat16", quant_scale=1.0):
        """Writes `rows` ([tokens, 1, 64] float32, exact in dtype) as one sequence; returns the
        case after checking it bit for bit against the reference."""
        rng = seeded_rng(self, place, quant, dtype)
        case = CacheCase(rng, place, quant, 64, 16, dtype, [rows.shape[0]], heads=1)
        if case.static[0] is not None:  # use an exact, chosen multiplier
            case.static = [np.float32([[quant_scale]] * 2), np.float32([[1.0 / quant_scale]] * 2)]
            case.write_scales = {f"{n}_quant_scale": from_numpy(case.static[0][0], "float32", place)
                                 for n in "kv"}
            case.read_scales = {f"{n}_dequant_scale": from_numpy(case.static[1][0], "float32", place)
                                for n in "kv"}
        case.write(rows, rows, [0], [rows.shape[0]])
        for i, (got, want) in enumerate(zip(case.device_state(), case.expected_state())):
            assert_bits_equal(self, got, want, f"cache tensor {i}")
        return case

    def slots(self, case, n):
        """Bytes of the first n positions of sequence 0, [n, 64]."""
        blocks = case.batch.block_tables[0]
        cache = case.device_state()[0]
        return np.stack([cache[blocks[p // 16], 0, p % 16] for p in range(n)])

    def test_zero_row_gives_zero_bytes_finite_scale_and_zero_gather(self):
        for place, quant in itertools.product(places(), ("cache_int8", "cache_fp8", "block_wise_fp8")):
            with self.subTest(place=place, quant=quant):
                rows = np.zeros((3, 1, 64), np.float32)
                case = self.write_rows(place, quant, rows)
                self.assertTrue((self.slots(case, 3) == 0).all())
                if quant == "block_wise_fp8":
                    blocks = case.batch.block_tables[0]
                    scales = case.device_state()[2][blocks[0], 0, :3]
                    self.assertTrue((scales == np.float32(2.0 ** -64)).all(), scales)
                k, v, _, _ = case.gather([3], [1], [4])
                values = ref.half_bits_to_float(k[:3], "bfloat16")
                self.assertFalse(np.isnan(values).any())
                self.assertTrue((values == 0).all())

    def test_huge_values_saturate(self):
        for place, quant in itertools.product(places(), ("cache_int8", "cache_fp8")):
            with self.subTest(place=place, quant=quant):
                rows = np.full((2, 1, 64), 1e30, np.float32)
                rows[1] *= -1
                rows = ref.half_bits_to_float(ref.to_half_bits(rows, "bfloat16"), "bfloat16")
                got = self.slots(self.write_rows(place, quant, rows), 2)
                top = 127 if quant == "cache_int8" else 0x7E
                self.assertTrue((got[0] == top).all(), got[0])
                self.assertTrue((got[1] == (256 - 127 if quant == "cache_int8" else 0xFE)).all(), got[1])

    def test_nan_and_inf_policy(self):
        # NaN -> 0x7f (fp8) / 0 (int8); inf saturates; block_wise_fp8 ignores NaN in amax.
        for place, quant in itertools.product(places(), ("cache_int8", "cache_fp8", "block_wise_fp8")):
            with self.subTest(place=place, quant=quant):
                rows = np.ones((1, 1, 64), np.float32)
                rows[0, 0, 1], rows[0, 0, 2], rows[0, 0, 3] = np.nan, np.inf, -2.0
                if quant == "block_wise_fp8":
                    rows[0, 0, 2] = 4.0  # an inf would make the whole row's scale inf
                got = self.slots(self.write_rows(place, quant, rows), 1)[0]
                nan_byte = 0 if quant == "cache_int8" else 0x7F
                self.assertEqual(got[1], nan_byte)
                if quant == "block_wise_fp8":
                    self.assertEqual(got[2], 0x7E)  # 4.0 is the amax: it maps to 448
                    self.assertEqual(got[0], ref.float_to_e4m3(np.float32(1.0) * ref.dynamic_scale(4.0)[1]))
                else:
                    self.assertEqual(got[2], 127 if quant == "cache_int8" else 0x7E)

    def test_signaling_nan_never_counts_towards_the_scale(self):
        """block_wise_fp8 leaves a signaling NaN (bf16 0x7f81, fp16 0x7c01) out of a row's amax as
        it does a quiet one, wherever it sits: the row's scale is its largest finite magnitude's."""
        for place, dtype in itertools.product(places(), ("bfloat16", "float16")):
            signaling_nan = 0x7F81 if dtype == "bfloat16" else 0x7C01
            for largest, nan_at in ((0, 1), (0, 40), (48, 49)):
                with self.subTest(place=place, dtype=dtype, largest=largest, nan_at=nan_at):
                    rng = seeded_rng(self, place, dtype)
                    case = CacheCase(rng, place, "block_wise_fp8", 64, 16, dtype, [1], heads=1)
                    bits = np.zeros((1, 1, 64), np.uint16)
                    bits[0, 0, largest] = ref.to_half_bits(np.float32([100.0]), dtype)[0]
                    bits[0, 0, nan_at] = signaling_nan
                    bits[0, 0, 60] = ref.to_half_bits(np.float32([1.0]), dtype)[0]
                    row = from_numpy(bits.view(np.float16), None, place) if dtype == "float16" else \
                        from_numpy(bits, "bfloat16", place)
                    self.assertEqual(to_numpy(row)[0, 0, nan_at], signaling_nan)
                    ops.write_cache_kv(row, row, *case.caches, case.block_tables,
                                       from_numpy(np.int32([0, 1]), None, place),
                                       from_numpy(np.int32([0]), None, place), "block_wise_fp8", **case.write_scales)
                    block = case.batch.block_tables[0, 0]
                    scale = case.device_state()[2][block, 0, 0]
                    self.assertEqual(scale, ref.dynamic_scale(100.0)[0])
                    values = ref.half_bits_to_float(bits, dtype)
                    want = ref.write_cache_kv(values, values, *case.np_caches, case.batch.block_tables,
                                              np.int32([0, 1]), np.int32([0]), "block_wise_fp8",
                                              k_scale_cache=case.np_tables[0], v_scale_cache=case.np_tables[1],
                                              dtype=dtype)
                    for i, (got, w) in enumerate(zip(case.device_state(), want)):
                        assert_bits_equal(self, got, w, f"cache tensor {i}")

    def test_rounding_ties_go_to_even(self):
        for place in places():
            with self.subTest(place=place, quant="cache_fp8"):
                # midpoints between neighbouring e4m3 values (exact in bf16), both signs
                grid = ref.e4m3_to_float(np.arange(0x7F))
                mids = ((grid[:-1] + grid[1:]) / 2).astype(np.float32)  # 126 ties
                rows = np.stack([mids[:64], mids[62:], -mids[:64], -mids[62:]])[:, None, :]
                got = self.slots(self.write_rows(place, "cache_fp8", rows), 4)
                below = np.concatenate([np.arange(64), np.arange(62, 126)])
                magnitudes = np.concatenate([got[0], got[1]])
                self.assertTrue(np.isin(magnitudes - below, (0, 1)).all(), magnitudes)
                self.assertTrue((magnitudes % 2 == 0).all(), magnitudes)
                self.assertTrue((np.concatenate([got[2], got[3]]) == magnitudes | 0x80).all())
            with self.subTest(place=place, quant="cache_int8"):
                halves = (np.arange(64, dtype=np.float32) - 32) + np.float32(0.5)
                got = self.slots(self.write_rows(place, "cache_int8", halves[None, None, :]), 1)[0]
                self.assertTrue((got.view(np.int8) % 2 == 0).all(), got.view(np.int8))


class TestUnmappedPositions(unittest.TestCase):
    def test_bad_block_ids_never_touch_memory(self):
        """Entries of -1 or >= num_blocks are skipped: nothing outside the cache is written and
        the rest of the cache is exactly as the reference says."""
        for place, quant in itertools.product(places(), ("none", "cache_fp8", "block_wise_fp8")):
            with self.subTest(place=place, quant=quant):
                rng = seeded_rng(self, place, quant)
                case = CacheCase(rng, place, quant, 64, 16, "bfloat16", [40])
                case.batch.block_tables[0, 1] = case.batch.num_blocks + 1000
                case.batch.block_tables[0, 2] = -1
                case.block_tables = from_numpy(case.batch.block_tables, None, place)
                k_vals, _ = ref.random_half(rng, (40, 2, 64), "bfloat16")
                case.write(k_vals, k_vals, [0], [40])
                for i, (got, want) in enumerate(zip(case.device_state(), case.expected_state())):
                    assert_bits_equal(self, got, want, f"cache tensor {i}")
                k, v, k_want, v_want = case.gather([40], [1], [41])
                assert_bits_equal(self, k, k_want, "gathered k")

    def test_validate_reports_bad_entries(self):
        rng = seeded_rng(self)
        case = CacheCase(rng, "cpu", "cache_fp8", 64, 16, "bfloat16", [40])
        case.batch.block_tables[0, 1] = case.batch.num_blocks
        bad_tables = from_numpy(case.batch.block_tables)
        k = from_numpy(np.zeros((40, 2, 64), np.float32), "bfloat16")
        with self.assertRaisesRegex(ValueError, r"block_tables\[0, 1\]"):
            ops.write_cache_kv(k, k, case.caches[0], case.caches[1], bad_tables,
                               from_numpy(np.int32([0, 40])), from_numpy(np.int32([0])),
                               "cache_fp8", validate=True, **case.write_scales)
        out = from_numpy(np.zeros((41, 2, 64), np.float32), "bfloat16")
        with self.assertRaisesRegex(ValueError, r"block_tables\[0, 1\]"):
            ops.append_cache_kv_c8(case.caches[0], case.caches[1], out, out, bad_tables,
                                   from_numpy(np.int32([1])), from_numpy(np.int32([40])),
                                   from_numpy(np.int32([0, 41])), "cache_fp8", validate=True,
                                   **case.read_scales)
        with self.assertRaisesRegex(ValueError, r"seq_lens_decoder\[0\] = -2: expected a non-negative length"):
            ops.write_cache_kv(k, k, case.caches[0], case.caches[1], from_numpy(case.batch.block_tables),
                               from_numpy(np.int32([0, 40])), from_numpy(np.int32([-2])),
                               "cache_fp8", validate=True, **case.write_scales)
        with self.assertRaisesRegex(ValueError, r"seq_lens_decoder\[0\] = -20: expected a non-negative length"):
            ops.append_cache_kv_c8(case.caches[0], case.caches[1], out, out, from_numpy(case.batch.block_tables),
                                   from_numpy(np.int32([1])), from_numpy(np.int32([-20])),
                                   from_numpy(np.int32([0, 41])), "cache_fp8", validate=True, **case.read_scales)
        with self.assertRaisesRegex(ValueError, "cu_seqlens_k: sequence 0 has 41 rows"):
            ops.append_cache_kv_c8(case.caches[0], case.caches[1], out, out,
                                   from_numpy(case.batch.block_tables * 0), from_numpy(np.int32([1])),
                                   from_numpy(np.int32([50])), from_numpy(np.int32([0, 41])),
                                   "cache_fp8", validate=True, **case.read_scales)


class TestRowsAtAnOddOffset(unittest.TestCase):
    def test_rows_view_one_element_in(self):
        """k as a contiguous view one element into its allocation: the CPU kernels take it as it is
        (bit for bit the reference); the GPU kernels move rows 16 bytes at a time and refuse it,
        with or without the wrapper's checks."""
        for place in places():
            with self.subTest(place=place):
                rng = seeded_rng(self, place)
                case = CacheCase(rng, place, "cache_fp8", 64, 16, "bfloat16", [9])
                k_vals, _ = ref.random_half(rng, (9, 2, 64), "bfloat16")
                flat = np.concatenate([np.zeros(1, np.uint16), ref.to_half_bits(k_vals, "bfloat16").ravel()])
                k_view = from_numpy(flat, "bfloat16", place)[1:].reshape([9, 2, 64])
                v = from_numpy(ref.to_half_bits(k_vals, "bfloat16"), "bfloat16", place)
                args = (k_view, v, *case.caches, case.block_tables, from_numpy(np.int32([0, 9]), None, place),
                        from_numpy(np.int32([0]), None, place), "cache_fp8")
                if place == "gpu":
                    self.assertEqual(k_view.data_ptr() % 16, 2, "a view one element in")
                    for checked in (True, False):
                        with self.assertRaisesRegex(ValueError if checked else Exception,
                                                    "k: the GPU kernels read .*16.*bytes at a time"):
                            ops.write_cache_kv(*args, **case.write_scales, check_inputs=checked)
                    continue
                ops.write_cache_kv(*args, **case.write_scales)
                expected = ref.write_cache_kv(
                    k_vals, k_vals, *case.np_caches, case.batch.block_tables, np.int32([0, 9]), np.int32([0]),
                    "cache_fp8", k_quant_scale=case.static[0][0], v_quant_scale=case.static[0][1], dtype="bfloat16")
                for got, want in zip(case.device_state(), expected[:2]):
                    assert_bits_equal(self, got, want, "cache")


class TestBadInput(unittest.TestCase):
    def setUp(self):
        rng = seeded_rng(self)
        self.case = CacheCase(rng, "cpu", "cache_fp8", 64, 16, "bfloat16", [20])
        self.k = from_numpy(np.zeros((20, 2, 64), np.float32), "bfloat16")
        self.cu = from_numpy(np.int32([0, 20]))
        self.dec = from_numpy(np.int32([0]))

    def write(self, **override):
        c = self.case
        args = dict(k=self.k, v=self.k, key_cache=c.caches[0], value_cache=c.caches[1],
                    block_tables=c.block_tables, cu_seqlens_q=self.cu, seq_lens_decoder=self.dec,
                    cache_quant_type="cache_fp8", **c.write_scales)
        args.update(override)
        return ops.write_cache_kv(**args)

    def test_write_rejects(self):
        c = self.case
        f32 = from_numpy(np.zeros((20, 2, 64), np.float32))
        cases = [
            (TypeError, "k: expected dtype bfloat16 or float16, got float32", dict(k=f32, v=f32)),
            (TypeError, "k: expected a paddle.Tensor, got ndarray", dict(k=np.zeros((20, 2, 64)))),
            (TypeError, "v: expected dtype bfloat16", dict(v=from_numpy(np.zeros((20, 2, 64), np.float32), "float16"))),
            (ValueError, r"v: expected shape \[20, 2, 64\], got \[19, 2, 64\]",
             dict(v=from_numpy(np.zeros((19, 2, 64), np.float32), "bfloat16"))),
            (ValueError, r"k: expected \[tokens, 2, 64\]",
             dict(k=from_numpy(np.zeros((20, 2, 128), np.float32), "bfloat16"))),
            (ValueError, "cache_quant_type: expected one of", dict(cache_quant_type="fp4")),
            (ValueError, "k_quant_scale: required", dict(k_quant_scale=None)),
            (ValueError, r"v_quant_scale: expected shape \[2\], got \[3\]",
             dict(v_quant_scale=from_numpy(np.ones(3, np.float32)))),
            (TypeError, "k_quant_scale: expected dtype float32 or bfloat16, got int32",
             dict(k_quant_scale=from_numpy(np.ones(2, np.int32)))),
            (ValueError, "k_scale_cache: must be None", dict(k_scale_cache=c.write_scales["k_quant_scale"])),
            (TypeError, "key_cache: expected dtype bfloat16, got uint8", dict(cache_quant_type="none",
                                                                             k_quant_scale=None, v_quant_scale=None)),
            (ValueError, "k_scale_cache: required", dict(cache_quant_type="block_wise_fp8",
                                                         k_quant_scale=None, v_quant_scale=None)),
            (TypeError, "block_tables: expected dtype int32, got int64",
             dict(block_tables=from_numpy(np.zeros((1, 3), np.int64)))),
            (ValueError, r"cu_seqlens_q: expected shape \[2\]", dict(cu_seqlens_q=from_numpy(np.int32([0, 10, 20])))),
            (ValueError, r"seq_lens_decoder: expected shape \[1\]", dict(seq_lens_decoder=from_numpy(np.int32([0, 0])))),
            (ValueError, r"block_size \(key_cache.shape\[2\]\): expected one of 16, 32, 64, 128, got 8",
             dict(key_cache=from_numpy(np.zeros((4, 2, 8, 64), np.uint8)),
                  value_cache=from_numpy(np.zeros((4, 2, 8, 64), np.uint8)))),
            (ValueError, r"head_dim \(key_cache.shape\[3\]\): expected one of 64, 128, 256, got 32",
             dict(key_cache=from_numpy(np.zeros((4, 2, 16, 32), np.uint8)),
                  value_cache=from_numpy(np.zeros((4, 2, 16, 32), np.uint8)))),
            (ValueError, r"value_cache: expected shape \[", dict(value_cache=from_numpy(np.zeros((4, 2, 16, 64), np.uint8)))),
        ]
        for error, message, override in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(error, message):
                    self.write(**override)

    def test_append_rejects(self):
        c = self.case
        out = from_numpy(np.zeros((21, 2, 64), np.float32), "bfloat16")
        base = dict(key_cache=c.caches[0], value_cache=c.caches[1], k_out=out, v_out=out,
                    block_tables=c.block_tables, seq_lens_this_time=from_numpy(np.int32([1])),
                    seq_lens_decoder=from_numpy(np.int32([20])), cu_seqlens_k=from_numpy(np.int32([0, 21])),
                    cache_quant_type="cache_fp8", **c.read_scales)
        cases = [
            (ValueError, "k_dequant_scale: required", dict(k_dequant_scale=None)),
            (TypeError, "k_out: expected dtype bfloat16 or float16, got float32",
             dict(k_out=from_numpy(np.zeros((21, 2, 64), np.float32)))),
            (ValueError, r"v_out: expected shape \[21, 2, 64\]",
             dict(v_out=from_numpy(np.zeros((22, 2, 64), np.float32), "bfloat16"))),
            (ValueError, r"cu_seqlens_k: expected shape \[2\]", dict(cu_seqlens_k=from_numpy(np.int32([0])))),
            (ValueError, "k_scale_cache: must be None", dict(k_scale_cache=c.read_scales["k_dequant_scale"])),
            (ValueError, "cache_quant_type: expected one of", dict(cache_quant_type="int4")),
        ]
        for error, message, override in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(error, message):
                    ops.append_cache_kv_c8(**{**base, **override})

    @unittest.skipUnless("gpu" in places(), "needs a GPU")
    def test_mixed_places_rejected(self):
        with self.assertRaisesRegex(ValueError, "same device.*k on gpu"):
            self.write(k=self.k.cuda(), v=self.k.cuda())


if __name__ == "__main__":
    unittest.main()
