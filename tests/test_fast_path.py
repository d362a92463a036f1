"""The dygraph fast path (fastattn._ext.fast_module): the per-layer ops called through their
Python module binding must give exactly what the registered ops give, mutate the same tensors in
place, and report bad input as an error. The registered op is the reference here; the op
suites check both against float64 (the wrappers take the fast path in dygraph)."""
import unittest

import numpy as np

from util import PagedBatch, cu_seqlens, from_numpy, places, random_bytes, seeded_rng, to_numpy
from fastattn import ops
from fastattn import reference as ref
from fastattn._ext import fast_module, ops_module

HEADS_Q, HEADS_KV, DIM, BLOCK = 8, 2, 64, 16


def half(rng, shape, place):
    return from_numpy(ref.random_half(rng, shape, "bfloat16")[0], "bfloat16", place)


def same(test, got, want, what):
    test.assertEqual(len(got), len(want), what)
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(to_numpy(g), to_numpy(w), err_msg=f"{what}: output {i}")


class TestFastPath(unittest.TestCase):
    def setUp(self):
        self.fast = fast_module()
        self.assertIsNotNone(self.fast, "the fast path did not load in this build")
        self.ops = ops_module()

    def test_attention_and_merge_match_the_registered_ops(self):
        for place in places():
            with self.subTest(place=place):
                rng = seeded_rng(self, place)
                lens = [5, 1, 37]
                tokens = sum(lens)
                q, k, v = (half(rng, (tokens, h, DIM), place) for h in (HEADS_Q, HEADS_KV, HEADS_KV))
                cu = from_numpy(cu_seqlens(lens), None, place)
                args = (q, k, v, cu, cu, None, None, None, DIM ** -0.5, True, "bfloat16", max(lens), 2, False)
                varlen = self.fast.flash_attn_varlen(*args)
                same(self, varlen, self.ops.fastattn_flash_attn_varlen(*args), "flash_attn_varlen")

                batch = PagedBatch(rng, BLOCK, lens)
                shape = (batch.num_blocks, HEADS_KV, BLOCK, DIM)
                caches = [from_numpy(random_bytes(rng, shape) & 0x77, "uint8", place) for _ in range(2)]
                scales = [from_numpy(np.float32(rng.uniform(0.01, 0.1, HEADS_KV)), "float32", place) for _ in range(2)]
                tables = from_numpy(batch.block_tables, None, place)
                seq_lens = from_numpy(np.int32(lens), None, place)
                kv_end = from_numpy(np.int32(rng.integers(0, 40, tokens)), None, place)
                args = (q, *caches, tables, seq_lens, cu, *scales, None, kv_end, "cache_fp8", 0.1, True, "float32", 0, False, 0, -1)
                same(self, self.fast.paged_attention(*args), self.ops.fastattn_paged_attention(*args),
                     "paged_attention")

                out, lse = varlen
                scale = from_numpy(np.float32([0.02]), "float32", place)
                args = (out, lse, out, lse, scale, "uint8")
                same(self, self.fast.merge_attn_states(*args), self.ops.fastattn_merge_attn_states(*args),
                     "merge_attn_states")

    def test_cache_ops_mutate_the_same_tensors(self):
        for place in places():
            with self.subTest(place=place):
                rng = seeded_rng(self, place)
                lens = [3, 20]
                tokens = sum(lens)
                batch = PagedBatch(rng, BLOCK, lens)
                shape = (batch.num_blocks, HEADS_KV, BLOCK, DIM)
                k, v = (half(rng, (tokens, HEADS_KV, DIM), place) for _ in range(2))
                tables = from_numpy(batch.block_tables, None, place)
                cu = from_numpy(cu_seqlens(lens), None, place)
                zeros = from_numpy(np.zeros(len(lens), np.int32), None, place)
                start = [random_bytes(rng, shape) for _ in range(2)]
                start_scales = [rng.uniform(1, 2, shape[:3]).astype(np.float32) for _ in range(2)]
                results = []
                for path in ("fast", "registered"):
                    caches = [from_numpy(c, "uint8", place) for c in start]
                    scale_tables = [from_numpy(s, "float32", place) for s in start_scales]
                    args = (k, v, *caches, *scale_tables, tables, cu, zeros)
                    if path == "fast":
                        self.assertIsNone(self.fast.write_cache_kv_dynamic(*args))
                    else:
                        self.ops.fastattn_write_cache_kv_dynamic(*args)
                    rows = [half(rng, (tokens, HEADS_KV, DIM), place) for _ in range(2)]
                    rows_before = [to_numpy(r).copy() for r in rows]
                    args = (*caches, *rows, tables, from_numpy(np.ones(len(lens), np.int32), None, place),
                            from_numpy(np.int32(lens), None, place), cu, *scale_tables, "block_wise_fp8")
                    if path == "fast":
                        self.fast.append_cache_kv_c8(*args)
                    else:
                        self.ops.fastattn_append_cache_kv_c8(*args)
                    results.append([to_numpy(t) for t in caches + scale_tables + rows])
                    self.assertFalse(np.array_equal(to_numpy(rows[0]), rows_before[0]), f"{path}: k_out unchanged")
                for i, (a, b) in enumerate(zip(*results)):
                    np.testing.assert_array_equal(a, b, err_msg=f"tensor {i}")
                self.assertFalse(np.array_equal(results[0][0], start[0]), "key_cache unchanged")

    def test_unchecked_wrappers_still_reject_bad_input(self):
        """check_inputs=False skips the Python checks, not the C++ ones."""
        a = from_numpy(np.zeros((4, 2, 32), np.float32), "float32")
        lse = from_numpy(np.zeros((2, 4), np.float32), "float32")
        with self.assertRaisesRegex(Exception, "suffix_lse: expected shape"):
            ops.merge_attn_states(a, lse, a, a, check_inputs=False)
        rng = seeded_rng(self)
        batch = PagedBatch(rng, BLOCK, [9])
        shape = (batch.num_blocks, HEADS_KV, BLOCK, DIM)
        key_cache = from_numpy(random_bytes(rng, shape) & 0x77, "uint8")
        value_cache = from_numpy(np.zeros(shape[:3] + (DIM // 2,), np.uint8), "uint8")
        q = half(rng, (1, HEADS_Q, DIM), "cpu")
        scale = from_numpy(np.float32([0.1] * HEADS_KV), "float32")
        with self.assertRaisesRegex(Exception, "value_cache"):
            ops.paged_attention(q, key_cache, value_cache, from_numpy(batch.block_tables, None),
                                from_numpy(np.int32([9]), None), from_numpy(np.int32([0, 1]), None),
                                cache_quant_type="cache_fp8", k_dequant_scale=scale, v_dequant_scale=scale,
                                check_inputs=False)
        odd_shape = (batch.num_blocks, HEADS_KV, 24, DIM)  # a block size the cache writers refuse
        odd_cache = from_numpy(random_bytes(rng, odd_shape) & 0x77, "uint8")
        with self.assertRaisesRegex(Exception, "block_size must be"):
            ops.paged_attention(q, odd_cache, odd_cache, from_numpy(batch.block_tables, None),
                                from_numpy(np.int32([9]), None), from_numpy(np.int32([0, 1]), None),
                                cache_quant_type="cache_fp8", k_dequant_scale=scale, v_dequant_scale=scale,
                                check_inputs=False)

    def test_strided_views_are_refused(self):
        """The ops read packed rows: a strided view (q sliced out of a packed qkv, a cache sliced out
        of a wider buffer) must raise, by name, not be read as if packed or written where the
        caller cannot see it. A view that is contiguous at an offset is taken as it is."""
        rng = seeded_rng(self)
        lens = [3, 6]
        tokens = sum(lens)
        qkv = half(rng, (tokens, HEADS_Q + 2 * HEADS_KV, DIM), "cpu")
        q, k, v = qkv[:, :HEADS_Q], qkv[:, HEADS_Q:HEADS_Q + HEADS_KV], qkv[:, HEADS_Q + HEADS_KV:]
        self.assertFalse(q.is_contiguous())
        cu = from_numpy(cu_seqlens(lens))
        dense = [from_numpy(to_numpy(t), "bfloat16") for t in (q, k, v)]  # (contiguous() makes a view dense in place)
        for checked in (True, False):
            with self.subTest(checked=checked):
                with self.assertRaisesRegex(ValueError, r"\bq\b.*(strided view|contiguous)"):
                    ops.flash_attn_varlen(q, *dense[1:], cu, cu, 6, 6, check_inputs=checked)
                with self.assertRaisesRegex(ValueError, r"\bv\b.*(strided view|contiguous)"):
                    ops.flash_attn_varlen(*dense[:2], v, cu, cu, 6, 6, check_inputs=checked)
        batch = PagedBatch(rng, BLOCK, lens)
        shape = (batch.num_blocks, HEADS_KV, BLOCK, DIM)
        pair = from_numpy(np.stack([random_bytes(rng, shape) & 0x77] * 2, axis=1), "uint8")  # [blocks, 2, ...]
        key_cache, value_cache = pair[:, 0], pair[:, 1]
        self.assertFalse(key_cache.is_contiguous())
        scale = from_numpy(np.float32([0.05] * HEADS_KV))
        tables = from_numpy(batch.block_tables)
        args = (dense[1], dense[2], key_cache, value_cache, tables, cu, from_numpy(np.zeros(2, np.int32)))
        before = to_numpy(pair).copy()
        for checked in (True, False):
            with self.subTest(checked=checked, op="write_cache_kv"):
                with self.assertRaisesRegex(ValueError, r"(value_cache|key_cache).*(the tensor itself|not a view)"):
                    ops.write_cache_kv(*args, "cache_fp8", scale, scale, check_inputs=checked)
                np.testing.assert_array_equal(to_numpy(pair), before)
        k_rows = half(rng, (tokens, 2 * HEADS_KV, DIM), "cpu")[:, :HEADS_KV]
        for checked in (True, False):
            with self.subTest(checked=checked, op="append_cache_kv_c8"):
                with self.assertRaisesRegex(ValueError, r"k_out"):
                    ops.append_cache_kv_c8(*(from_numpy(to_numpy(c), "uint8") for c in (key_cache, value_cache)),
                                           k_rows, dense[1], tables,
                                           from_numpy(np.int32(lens)), from_numpy(np.int32(lens)), cu, "cache_fp8",
                                           scale, scale, check_inputs=checked)
        out, lse = ops.flash_attn_varlen(*dense, cu, cu, 6, 6)
        for checked in (True, False):
            with self.subTest(checked=checked, op="merge_attn_states"):
                with self.assertRaisesRegex(ValueError, r"prefix_lse"):
                    ops.merge_attn_states(out, from_numpy(to_numpy(lse).T.copy()).t(), out, lse, check_inputs=checked)

        # Packed although Paddle calls it non-contiguous (a size-1 dimension's stride): taken as it is.
        one = qkv[:1, :HEADS_Q]
        self.assertFalse(one.is_contiguous())
        cu_one = from_numpy(np.int32([0, 1]))
        for checked in (True, False):
            with self.subTest(checked=checked, tokens=1):
                got = ops.flash_attn_varlen(one, *(t[:1].contiguous() for t in dense[1:]), cu_one, cu_one, 1, 1,
                                            check_inputs=checked)
                want = ops.flash_attn_varlen(dense[0][:1].contiguous(), *(t[:1].contiguous() for t in dense[1:]),
                                             cu_one, cu_one, 1, 1)
                np.testing.assert_array_equal(to_numpy(got[0]), to_numpy(want[0]))

        # Contiguous at an offset: the same result as a fresh copy.
        wide = from_numpy(np.concatenate([to_numpy(dense[0]), to_numpy(dense[0])]), "bfloat16")
        late = wide[tokens:]
        self.assertTrue(late.is_contiguous())
        np.testing.assert_array_equal(to_numpy(ops.flash_attn_varlen(late, *dense[1:], cu, cu, 6, 6)[0]),
                                      to_numpy(out))

    def test_integer_attributes_fit_int32(self):
        a = half(seeded_rng(self), (4, HEADS_KV, DIM), "cpu")
        cu = from_numpy(np.int32([0, 4]))
        with self.assertRaisesRegex(ValueError, "max_seqlen_k = 4294967299 does not fit in int32"):
            self.fast.flash_attn_varlen(a, a, a, cu, cu, None, None, None, 0.1, True, "bfloat16", 2**32 + 3, 0, False)
        for checked in (True, False):
            with self.subTest(checked=checked):
                with self.assertRaisesRegex(ValueError, "max_seqlen_k"):
                    ops.flash_attn_varlen(a, a, a, cu, cu, 4, 2**40, check_inputs=checked)
        want = to_numpy(ops.flash_attn_varlen(a, a, a, cu, cu, 4, 4)[0])
        got = to_numpy(ops.flash_attn_varlen(a, a, a, cu, cu, np.int64(4), np.int32(4), num_splits=np.int16(1))[0])
        np.testing.assert_array_equal(got, want)

    def test_bad_input_raises(self):
        a = from_numpy(np.zeros((4, 2, 32), np.float32), "float32")
        lse = from_numpy(np.zeros((2, 4), np.float32), "float32")
        with self.assertRaisesRegex(Exception, "suffix_lse: expected shape"):
            self.fast.merge_attn_states(a, lse, a, a, None, "")
        with self.assertRaises(TypeError):  # not a tensor
            self.fast.merge_attn_states(a, lse, a, "lse", None, "")


if __name__ == "__main__":
    unittest.main()
