"""The ops inside programs that paddle.static and paddle.jit.to_static build (on the CPU): the same
outputs as in dygraph, caches written in place, and shapes inferred where sizes are known only
when the program runs."""
import tempfile
import unittest

import numpy as np
import paddle
from paddle.static import InputSpec

from util import PagedBatch, assert_bits_equal, cu_seqlens, from_numpy, random_bytes, seeded_rng, to_numpy
from fastattn import ops
from fastattn import reference as ref

HEADS_Q, HEADS_KV, DIM, BLOCK = 4, 2, 64, 16


def run_program(build, feed):
    """Builds a program with `build()` (returning the values to fetch) and runs it once on the
    CPU; returns (the values as built, the fetched arrays)."""
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            built = build()
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup)
        return built, executor.run(main, feed=feed, fetch_list=built)
    finally:
        paddle.disable_static()


def data(name, shape, dtype):
    return paddle.static.data(name, shape, dtype)


def assert_same_bits(test, fetched, want, what):
    """A fetched array against a dygraph tensor's (16-bit floats compared as bits)."""
    want = to_numpy(want)
    fetched = np.asarray(fetched)
    assert_bits_equal(test, fetched.view(want.dtype) if fetched.dtype.itemsize == want.dtype.itemsize else fetched,
                      want, what)


class TestStaticGraph(unittest.TestCase):
    def setUp(self):
        # Programs run where the current device says; a GPU build of Paddle would put them (and
        # Paddle's own kernels, such as the layer's `* 2` below) on the GPU.
        self.addCleanup(paddle.set_device, paddle.get_device())
        paddle.set_device("cpu")
        rng = seeded_rng(self)
        self.lens = [5, 12]
        tokens = sum(self.lens)
        self.batch = PagedBatch(rng, BLOCK, self.lens)
        self.arrays = dict(
            q=ref.random_half(rng, (tokens, HEADS_Q, DIM), "float16")[0].astype(np.float16),
            k=ref.random_half(rng, (tokens, HEADS_KV, DIM), "float16")[0].astype(np.float16),
            v=ref.random_half(rng, (tokens, HEADS_KV, DIM), "float16")[0].astype(np.float16),
            key_cache=random_bytes(rng, (self.batch.num_blocks, HEADS_KV, BLOCK, DIM)),
            value_cache=random_bytes(rng, (self.batch.num_blocks, HEADS_KV, BLOCK, DIM)),
            block_tables=self.batch.block_tables, cu=cu_seqlens(self.lens), zeros=np.zeros(2, np.int32),
            seq_lens=np.int32(self.lens), k_scale=np.float32([40.0, 60.0]), v_scale=np.float32([90.0, 70.0]))
        self.arrays["k_dequant"] = np.float32(1.0) / self.arrays["k_scale"]
        self.arrays["v_dequant"] = np.float32(1.0) / self.arrays["v_scale"]

    def dygraph(self, name):
        a = self.arrays[name]
        return from_numpy(a, "float16" if a.dtype == np.float16 else None)

    def test_write_then_attend_with_unknown_token_counts(self):
        """write_cache_kv then paged_attention over the cache it wrote, in one program whose token
        and batch sizes are -1 until it runs; then flash_attn_varlen over the same rows."""
        key_cache, value_cache = self.dygraph("key_cache"), self.dygraph("value_cache")
        d = self.dygraph
        ops.write_cache_kv(d("k"), d("v"), key_cache, value_cache, d("block_tables"), d("cu"), d("zeros"),
                           "cache_fp8", d("k_scale"), d("v_scale"))
        want_paged = ops.paged_attention(d("q"), key_cache, value_cache, d("block_tables"), d("seq_lens"), d("cu"),
                                         "cache_fp8", d("k_dequant"), d("v_dequant"))
        want_varlen = ops.flash_attn_varlen(d("q"), d("k"), d("v"), d("cu"), d("cu"), 12, 12, causal=True)

        def build():
            x = {name: data(name, [None, n, DIM], "float16") for name, n in (("q", HEADS_Q), ("k", HEADS_KV),
                                                                              ("v", HEADS_KV))}
            caches = [data(name, list(self.arrays[name].shape), "uint8") for name in ("key_cache", "value_cache")]
            tables = data("block_tables", [None, self.batch.block_tables.shape[1]], "int32")
            cu, zeros, seq_lens = (data(name, [None], "int32") for name in ("cu", "zeros", "seq_lens"))
            scales = [data(name, [HEADS_KV], "float32") for name in ("k_scale", "v_scale", "k_dequant", "v_dequant")]
            written = ops.write_cache_kv(x["k"], x["v"], *caches, tables, cu, zeros, "cache_fp8", *scales[:2])
            out, lse = ops.paged_attention(x["q"], *written, tables, seq_lens, cu, "cache_fp8", *scales[2:])
            self.assertEqual(list(out.shape), [-1, HEADS_Q, DIM])
            self.assertEqual(list(lse.shape), [HEADS_Q, -1])
            varlen = ops.flash_attn_varlen(x["q"], x["k"], x["v"], cu, cu, 12, 12, causal=True)
            return [*written, out, lse, *varlen]

        _, got = run_program(build, self.arrays)
        want = [key_cache, value_cache, *want_paged, *want_varlen]
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_bits(self, g, w, f"output {i}")

    def test_merge_and_mxfp4_with_unknown_sizes(self):
        rng = seeded_rng(self)
        outputs = [ref.random_half(rng, (7, HEADS_Q, DIM), "float16")[0].astype(np.float16) for _ in range(2)]
        lses = [rng.standard_normal((HEADS_Q, 7)).astype(np.float32) for _ in range(2)]
        x = (rng.standard_normal((3, 96)) * 5).astype(np.float32)
        feed = dict(po=outputs[0], so=outputs[1], pl=lses[0], sl=lses[1], x=x)
        want = [*ops.merge_attn_states(*(from_numpy(a, "float16" if a.dtype == np.float16 else None)
                                         for a in (outputs[0], lses[0], outputs[1], lses[1])))]
        packed, scales = ops.quant_mxfp4(from_numpy(x))
        want += [packed, scales, ops.dequant_mxfp4(packed, scales)]

        def build():
            merged = ops.merge_attn_states(
                data("po", [None, HEADS_Q, DIM], "float16"), data("pl", [HEADS_Q, None], "float32"),
                data("so", [None, HEADS_Q, DIM], "float16"), data("sl", [HEADS_Q, None], "float32"))
            quantized = ops.quant_mxfp4(data("x", [None, None], "float32"))
            self.assertEqual([list(t.shape) for t in quantized], [[-1, -1], [-1, -1]])
            return [*merged, *quantized, ops.dequant_mxfp4(*quantized)]

        _, got = run_program(build, feed)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_bits(self, g, w, f"output {i}")

    def test_validate_needs_dygraph(self):
        def build():
            q = data("q", [None, HEADS_Q, DIM], "float16")
            cu = data("cu", [None], "int32")
            ops.flash_attn_varlen(q, q, q, cu, cu, 4, 4, validate=True)
        with self.assertRaisesRegex(ValueError, "validate: a static program's values hold no data"):
            run_program(build, {})

    def test_to_static_and_saved(self):
        """A layer that calls paged_attention, converted by paddle.jit.to_static (rewritten in full;
        and traced, on a Paddle whose tracer can be told to take the wrappers as they are: 3.x),
        saved with paddle.jit.save and loaded back: the dygraph result."""
        class Layer(paddle.nn.Layer):
            def forward(self, q, key_cache, value_cache, block_tables, seq_lens, cu, k_dequant, v_dequant):
                out, lse = ops.paged_attention(q, key_cache, value_cache, block_tables, seq_lens, cu, "cache_fp8",
                                               k_dequant, v_dequant)
                return out * 2, lse

        names = ("q", "key_cache", "value_cache", "block_tables", "seq_lens", "cu", "k_dequant", "v_dequant")
        inputs = [self.dygraph(n) for n in names]
        want = [to_numpy(t) for t in Layer()(*inputs)]
        specs = [InputSpec([None, HEADS_Q, DIM], "float16"), InputSpec(list(self.arrays["key_cache"].shape), "uint8"),
                 InputSpec(list(self.arrays["value_cache"].shape), "uint8"),
                 InputSpec([None, self.batch.block_tables.shape[1]], "int32"), InputSpec([None], "int32"),
                 InputSpec([None], "int32"), InputSpec([HEADS_KV], "float32"), InputSpec([HEADS_KV], "float32")]
        traced = hasattr(getattr(paddle.jit, "marker", None), "unified")
        for full_graph in (True, False) if traced else (True,):
            with self.subTest(full_graph=full_graph):
                layer = Layer()
                layer.eval()  # (the ops have no gradients: a training program would want them)
                converted = paddle.jit.to_static(layer, input_spec=specs, full_graph=full_graph)
                for g, w in zip(converted(*inputs), want):
                    np.testing.assert_array_equal(to_numpy(g), w)
                with tempfile.TemporaryDirectory() as folder:
                    paddle.jit.save(converted, f"{folder}/layer")
                    loaded = paddle.jit.load(f"{folder}/layer")
                    for g, w in zip(loaded(*inputs), want):
                        np.testing.assert_array_equal(to_numpy(g), w)


if __name__ == "__main__":
    unittest.main()
