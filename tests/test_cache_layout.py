"""fastattn.cache: allocation and the per-layer index rule of the server's flat caches list,
exercised through the real write op on a multi-layer list."""
import types
import unittest

import numpy as np

from util import cu_seqlens, from_numpy, places, seeded_rng, to_numpy
from fastattn import cache, ops
from fastattn import reference as ref

LAYERS, BLOCKS, HEADS, BLOCK_SIZE, HEAD_DIM = 3, 6, 2, 16, 64


def make_layer(layer_id, quant, place, rng):
    layer = types.SimpleNamespace(layer_id=layer_id, cache_quant_type_str=quant)
    if quant in ("cache_int8", "cache_fp8"):
        cache.set_static_scales(layer, rng.uniform(1, 4, size=(2, HEADS)), place)
    return layer


def write_layer(caches, layer, rng, place, tokens=20):
    lc = cache.layer_caches(caches, layer)
    k = from_numpy(ref.random_half(rng, (tokens, HEADS, HEAD_DIM), "bfloat16")[1], "bfloat16", place)
    ops.write_cache_kv(k, k, lc.key_cache, lc.value_cache,
                       from_numpy(np.int32([[0, 1]]), None, place),
                       from_numpy(cu_seqlens([tokens]), None, place),
                       from_numpy(np.int32([0]), None, place), **lc.write_args())


class TestLayerCaches(unittest.TestCase):
    def test_allocation_shapes_dtypes_and_zero_fill(self):
        for quant in cache.QUANT_TYPES:
            with self.subTest(quant=quant):
                caches = cache.allocate_kv_caches(LAYERS, BLOCKS, HEADS, BLOCK_SIZE, HEAD_DIM, quant)
                per_layer = 4 if quant == "block_wise_fp8" else 2
                self.assertEqual(len(caches), LAYERS * per_layer)
                for i, t in enumerate(caches):
                    is_table = per_layer == 4 and i % 4 >= 2
                    want_shape = [BLOCKS, HEADS, BLOCK_SIZE] + ([] if is_table else [HEAD_DIM])
                    want_dtype = "float32" if is_table else "bfloat16" if quant == "none" else "uint8"
                    self.assertEqual(list(t.shape), want_shape)
                    self.assertEqual(str(t.dtype).replace("paddle.", ""), want_dtype)
                    self.assertFalse(to_numpy(t).any())

    def test_writing_one_layer_leaves_the_others_alone(self):
        for place in places():
            for quant in cache.QUANT_TYPES:
                with self.subTest(place=place, quant=quant):
                    rng = seeded_rng(self, place, quant)
                    caches = cache.allocate_kv_caches(LAYERS, BLOCKS, HEADS, BLOCK_SIZE, HEAD_DIM,
                                                      quant, place=place)
                    layers = [make_layer(i, quant, place, rng) for i in range(LAYERS)]
                    for layer in layers:  # give every layer distinct random content
                        write_layer(caches, layer, rng, place)
                    before = [to_numpy(t) for t in caches]
                    write_layer(caches, layers[1], rng, place, tokens=7)
                    after = [to_numpy(t) for t in caches]
                    per_layer = len(caches) // LAYERS
                    for i, (b, a) in enumerate(zip(before, after)):
                        if i // per_layer == 1:
                            self.assertFalse(np.array_equal(a, b), f"caches[{i}] of layer 1 not written")
                        else:
                            np.testing.assert_array_equal(a, b, err_msg=f"caches[{i}] changed")

    def test_index_rule(self):
        rng = seeded_rng(self)
        for quant in cache.QUANT_TYPES:
            with self.subTest(quant=quant):
                caches = cache.allocate_kv_caches(LAYERS, BLOCKS, HEADS, BLOCK_SIZE, HEAD_DIM, quant)
                per_layer = cache.tensors_per_layer(quant)
                for layer_id in range(LAYERS):
                    layer = make_layer(layer_id, quant, "cpu", rng)
                    lc = cache.layer_caches(caches, layer)
                    self.assertIs(lc.key_cache, caches[per_layer * layer_id])
                    self.assertIs(lc.value_cache, caches[per_layer * layer_id + 1])
                    if quant == "block_wise_fp8":
                        self.assertIs(lc.k_scale_cache, caches[4 * layer_id + 2])
                        self.assertIs(lc.v_scale_cache, caches[4 * layer_id + 3])
                    if quant in ("cache_int8", "cache_fp8"):
                        self.assertIs(lc.k_quant_scale, layer.cache_k_scale)
                        self.assertIs(lc.v_dequant_scale, layer.cache_v_out_scale)

    def test_bad_lists_and_layers(self):
        caches = cache.allocate_kv_caches(2, BLOCKS, HEADS, BLOCK_SIZE, HEAD_DIM, "cache_fp8")
        layer = types.SimpleNamespace(layer_id=2, cache_quant_type_str="cache_fp8")
        with self.assertRaisesRegex(ValueError, r"layer 2 needs caches\[4:6\]"):
            cache.layer_caches(caches, layer)
        layer.layer_id = 0
        with self.assertRaisesRegex(ValueError, "layer.cache_k_scale: cache_fp8 needs"):
            cache.layer_caches(caches, layer)
        layer.cache_quant_type_str = "block_wise_fp8"
        with self.assertRaisesRegex(TypeError, r"caches\[4L\+2\] \(key scales\): expected dtype"):
            cache.layer_caches(caches, layer)
        with self.assertRaisesRegex(ValueError, "cache_quant_type: expected one of"):
            cache.allocate_kv_caches(1, 4, 2, 16, 64, "fp8")
        with self.assertRaisesRegex(ValueError, "head_dim: expected one of 64, 128, 256, got 96"):
            cache.allocate_kv_caches(1, 4, 2, 16, 96, "cache_fp8")
        with self.assertRaisesRegex(ValueError, r"absmax: expected \[2, kv_heads\]"):
            cache.set_static_scales(types.SimpleNamespace(cache_quant_type_str="cache_fp8"), np.ones(HEADS))
        with self.assertRaisesRegex(ValueError, "static scales exist for cache_int8 and cache_fp8"):
            cache.set_static_scales(types.SimpleNamespace(cache_quant_type_str="none"), np.ones((2, HEADS)))

    def test_bytes_per_token(self):
        self.assertEqual(cache.cache_bytes_per_token(8, 128, "none"), 2 * 8 * 128 * 2)
        self.assertEqual(cache.cache_bytes_per_token(8, 128, "cache_fp8"), 2 * 8 * 128)
        self.assertEqual(cache.cache_bytes_per_token(8, 128, "block_wise_fp8"), 2 * 8 * (128 + 4))


if __name__ == "__main__":
    unittest.main()
