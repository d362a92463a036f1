"""A decode step through the backends captured in a CUDA graph: the capture must succeed (no host
sync, no data-dependent host logic inside forward_mixed) and a replay must reproduce the eager
step bit for bit. GPU only."""
import types
import unittest

import numpy as np

from util import gpu_available, seeded_rng, to_numpy
from fastattn import cache
from fastattn import reference as ref
from fastattn.backends import FlashAttentionBackend, ForwardMeta
from fastattn.tensors import from_numpy

HEADS_Q, HEADS_KV, DIM, BLOCK = 8, 2, 128, 16


@unittest.skipUnless(gpu_available(), "CUDA graphs need a GPU")
class TestDecodeStepInCudaGraph(unittest.TestCase):
    def run_quant(self, quant):
        from paddle.device.cuda.graphs import CUDAGraph
        rng = seeded_rng(self, quant)
        prompt = [37, 20, 5]
        # 16 blocks per sequence: room for 256 keys, so the plan splits the keys and the split
        # workspace is allocated inside the capture.
        tables = np.arange(len(prompt) * 16, dtype=np.int32).reshape(len(prompt), 16)
        caches = cache.allocate_kv_caches(2, tables.size, HEADS_KV, BLOCK, DIM, quant, place="gpu")
        layers = []
        for layer_id in range(2):
            layer = types.SimpleNamespace(layer_id=layer_id, cache_quant_type_str=quant)
            if quant in ("cache_int8", "cache_fp8"):
                cache.set_static_scales(layer, np.full((2, HEADS_KV), 4.0), "gpu")
            layers.append(layer)
        backend = FlashAttentionBackend()

        def inputs(tokens):
            return [from_numpy(ref.random_half(rng, (tokens, heads, DIM), "bfloat16")[1], "bfloat16", "gpu")
                    for heads in (HEADS_Q, HEADS_KV, HEADS_KV)]

        n = len(prompt)
        prefill = ForwardMeta.build(caches, tables, np.int32(prompt), np.zeros(n, np.int32), np.int32(prompt))
        for layer in layers:
            backend.forward_mixed(*inputs(sum(prompt)), layer, prefill)
        decode = ForwardMeta.build(caches, tables, np.zeros(n, np.int32), np.int32(prompt), np.ones(n, np.int32))
        step_inputs = [inputs(n) for _ in layers]
        eager = [to_numpy(backend.forward_mixed(*x, layer, decode)) for x, layer in zip(step_inputs, layers)]

        graph = CUDAGraph()
        graph.capture_begin()
        captured = [backend.forward_mixed(*x, layer, decode) for x, layer in zip(step_inputs, layers)]
        graph.capture_end()
        graph.replay()
        for layer, want, got in zip(layers, eager, captured):
            np.testing.assert_array_equal(to_numpy(got), want, err_msg=f"layer {layer.layer_id}")
        graph.reset()

    def test_every_quant_type(self):
        for quant in cache.QUANT_TYPES:
            with self.subTest(quant=quant):
                self.run_quant(quant)


if __name__ == "__main__":
    unittest.main()
