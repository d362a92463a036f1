"""fastattn.backends: write -> attend for mixed batches, against a float64 reference attention
over the cache's dequantized values, on a multi-layer caches list whose every tensor is poisoned
and mirrored in numpy (so a write that strays into another layer, or a read of an unwritten slot,
shows up)."""
import contextlib
import itertools
import types
import unittest
from unittest import mock

import numpy as np
import paddle

from util import float_values, from_numpy, places, random_bits16, random_bytes, rel_err, seeded_rng, to_numpy
from fastattn import cache
from fastattn import reference as ref
from fastattn.backends import FlashAttentionBackend, FlashMaskAttentionBackend, ForwardMeta

BACKENDS = {
    "paged": FlashAttentionBackend,
    "gather": lambda: FlashAttentionBackend(prefill_path="gather"),
    "flash_mask": FlashMaskAttentionBackend,
}

# ||out - ref|| / ||ref|| over a step's rows, the reference computed in float64 on exactly the
# values the cache holds (so quantization error is not counted; FP8/INT8 caches are judged on
# their dequantized values). fp32 accumulation adds ~1e-6; what remains is rounding to q's dtype.
# The output is rounded once: relative rms about 1.6e-3 for bf16 (8 significant bits), 2e-4 for
# fp16 (11). The gather path also rounds the dequantized K and V to q's dtype before attending
# (append_cache_kv_c8's read rule): two more roundings of that size, so about twice the error for
# the quantized types. Bounds: 2.5x those estimates.
BOUNDS = {("paged", "bfloat16"): 4e-3, ("paged", "float16"): 5e-4,
          ("gather", "bfloat16"): 8e-3, ("gather", "float16"): 1e-3}

LAYERS = 3
BIG = 10 ** 6  # a kv_end that limits nothing


def plan(block_size):
    """Three steps over five batch slots, as (seq_lens_encoder, seq_lens_decoder, seq_lens_this_time).

    slot 0: idle, then a fresh prefill, then a decode.
    slot 1: a first chunk of block_size + 5 tokens, a second chunk after that unaligned prefix, a decode.
    slot 2: idle, then a prefix-cache hit on slot 1's first block (block_size tokens) plus 7 new
            tokens, then a decode.
    slot 3: a prefill, then two decodes.
    slot 4: a prefill, then idle with tokens in the cache, then a decode.
    """
    first = block_size + 5
    return [
        ([0, first, 0, 40, 13], [0, 0, 0, 0, 0], [0, first, 0, 40, 13]),
        ([37, 9, 7, 0, 0], [0, first, block_size, 40, 13], [37, 9, 7, 1, 0]),
        ([0, 0, 0, 0, 0], [37, first + 9, block_size + 7, 41, 13], [1, 1, 1, 1, 1]),
    ]


def block_tables(rng, block_size):
    """Shuffled blocks for the plan's final lengths; slot 2's first entry is slot 1's first block."""
    final = [38, block_size + 15, block_size + 8, 42, 14]
    need = [-(-n // block_size) for n in final]
    need[2] -= 1  # the shared block
    num_blocks = sum(need) + 3  # spare blocks nobody owns
    order = list(rng.permutation(num_blocks))
    tables = np.full((5, max(need) + 2), -1, np.int32)
    for b, n in enumerate(need):
        first = 1 if b == 2 else 0
        tables[b, first:first + n] = [order.pop() for _ in range(n)]
    tables[2, 0] = tables[1, 0]
    return tables, num_blocks


class MirroredServer:
    """A server's caches list for LAYERS layers on a device, every tensor poisoned with random
    content, and a numpy mirror that the reference writes keep in step."""

    def __init__(self, rng, place, quant, dtype, heads_q, heads_kv, head_dim, block_size):
        self.rng, self.place, self.quant, self.dtype = rng, place, quant, dtype
        self.heads_q, self.heads_kv, self.head_dim = heads_q, heads_kv, head_dim
        self.tables, num_blocks = block_tables(rng, block_size)
        layout = cache.allocate_kv_caches(LAYERS, num_blocks, heads_kv, block_size, head_dim, quant, dtype)
        self.mirror = [self.poison(t) for t in layout]
        self.caches = [from_numpy(m, str(t.dtype).replace("paddle.", ""), place)
                       for m, t in zip(self.mirror, layout)]
        self.layers = [self.make_layer(i) for i in range(LAYERS)]

    def poison(self, t):
        shape = tuple(t.shape)
        name = str(t.dtype).replace("paddle.", "")
        if name == "float32":  # block_wise_fp8 scale tables: NaN wherever nothing was written
            return np.full(shape, np.nan, np.float32)
        return random_bytes(self.rng, shape) if name == "uint8" else random_bits16(self.rng, shape, name)

    def make_layer(self, layer_id):
        layer = types.SimpleNamespace(layer_id=layer_id, cache_quant_type_str=self.quant)
        if layer_id == 1:
            layer.softmax_scale = 0.09  # a layer with its own scale
        if self.quant in ("cache_int8", "cache_fp8"):
            absmax = self.rng.uniform(2.5, 6.0, size=(2, self.heads_kv))
            layer.scales = cache.set_static_scales(layer, absmax, self.place)
        return layer

    def layer_slice(self, layer_id):
        per_layer = cache.tensors_per_layer(self.quant)
        return slice(per_layer * layer_id, per_layer * (layer_id + 1))

    def step(self, backend, encoder, decoder, this_time, kv_end=None):
        """Runs every layer through `backend` for one step; yields (layer_id, output values
        [T, Hq, D], reference [T, Hq, D]) after checking every cache tensor against the mirror."""
        meta = ForwardMeta.build(self.caches, self.tables, np.int32(encoder), np.int32(decoder),
                                 np.int32(this_time), kv_end=kv_end)
        tokens = sum(this_time)
        cu_q = np.concatenate([[0], np.cumsum(this_time)]).astype(np.int32)
        for layer in self.layers:
            q, q_bits = ref.random_half(self.rng, (tokens, self.heads_q, self.head_dim), self.dtype)
            k, k_bits = ref.random_half(self.rng, (tokens, self.heads_kv, self.head_dim), self.dtype, scale=2.0)
            v, v_bits = ref.random_half(self.rng, (tokens, self.heads_kv, self.head_dim), self.dtype)
            out = backend.forward_mixed(*(from_numpy(x, self.dtype, self.place) for x in (q_bits, k_bits, v_bits)),
                                        layer, meta)
            self.write_mirror(layer, k, v, cu_q, decoder)
            for i, (device, mirrored) in enumerate(zip(self.caches, self.mirror)):
                np.testing.assert_array_equal(to_numpy(device), mirrored, err_msg=f"caches[{i}] after layer "
                                              f"{layer.layer_id} wrote (only that layer's tensors may change)")
            key_values, value_values = self.dequantized(layer)
            want, _ = ref.paged_attention(q, key_values, value_values, self.tables, np.add(decoder, this_time), cu_q,
                                          getattr(layer, "softmax_scale", self.head_dim ** -0.5), True, kv_end)
            got = float_values(out)
            assert got.shape == (tokens, self.heads_q * self.head_dim), got.shape
            yield layer.layer_id, got.reshape(want.shape), want

    def write_mirror(self, layer, k, v, cu_q, decoder):
        own = self.mirror[self.layer_slice(layer.layer_id)]
        quant_scales = layer.scales[0] if hasattr(layer, "scales") else (None, None)
        tables = own[2:] if len(own) == 4 else (None, None)
        written = ref.write_cache_kv(k, v, own[0], own[1], self.tables, cu_q, np.int32(decoder), self.quant,
                                     quant_scales[0], quant_scales[1], tables[0], tables[1], self.dtype)
        self.mirror[self.layer_slice(layer.layer_id)] = [w for w in written if w is not None]

    def dequantized(self, layer):
        own = self.mirror[self.layer_slice(layer.layer_id)]
        dequant = layer.scales[1] if hasattr(layer, "scales") else (None, None)
        tables = own[2:] if len(own) == 4 else (None, None)
        return [ref.dequantized_cache(own[i], self.quant, dequant[i], tables[i], self.dtype) for i in range(2)]


def flash_mask_limits(decoder, this_time):
    """kv_end for a step: the first query of an even slot sees nothing, of an odd slot only the
    first half of its cached prefix; every second query sees only the first 5 keys; the rest are
    limited by causality alone."""
    limits = []
    for b, (cached, new) in enumerate(zip(decoder, this_time)):
        row = [BIG] * new
        if new:
            row[0] = 0 if b % 2 == 0 else (cached + 1) // 2
        if new > 1:
            row[1] = 5
        limits += row
    return np.int32(limits)


class TestBackends(unittest.TestCase):
    def run_plan(self, place, backend_name, quant, dtype="bfloat16", heads=(8, 2), head_dim=64, block_size=16):
        rng = seeded_rng(self, place, backend_name, quant, dtype, heads, head_dim, block_size)
        server = MirroredServer(rng, place, quant, dtype, *heads, head_dim, block_size)
        backend = BACKENDS[backend_name]()
        bound = BOUNDS["gather" if backend_name == "gather" else "paged", dtype]
        for step, (encoder, decoder, this_time) in enumerate(plan(block_size)):
            kv_end = flash_mask_limits(decoder, this_time) if backend_name == "flash_mask" else None
            for layer_id, got, want in server.step(backend, encoder, decoder, this_time, kv_end):
                where = f"step {step} layer {layer_id}"
                self.assertFalse(np.isnan(got).any(), where)
                self.assertLess(rel_err(got, want), bound, where)
                if kv_end is not None:
                    masked = kv_end == 0
                    self.assertTrue(masked.any())
                    self.assertTrue((got[masked] == 0).all(), f"{where}: rows with no visible key must be 0")

    def test_every_quant_type_and_backend(self):
        for place, backend_name, quant in itertools.product(places(), BACKENDS, cache.QUANT_TYPES):
            with self.subTest(place=place, backend=backend_name, quant=quant):
                self.run_plan(place, backend_name, quant)

    def test_fp16_gqa_ratios_and_other_sizes(self):
        cases = [("none", "float16", (4, 4), 64, 16), ("block_wise_fp8", "float16", (8, 1), 128, 32),
                 ("cache_int8", "bfloat16", (6, 2), 128, 64), ("cache_fp8", "float16", (2, 1), 256, 16)]
        for place, backend_name, (quant, dtype, heads, head_dim, block_size) in itertools.product(
                places(), ("paged", "gather"), cases):
            with self.subTest(place=place, backend=backend_name, quant=quant, dtype=dtype, heads=heads,
                              head_dim=head_dim, block_size=block_size):
                self.run_plan(place, backend_name, quant, dtype, heads, head_dim, block_size)

    def test_layers_never_read_data_back_to_the_host(self):
        """Per layer a backend only launches ops: no device-to-host copy and no host-to-device
        copy (the CUDA-graph rule for the decode path). The paged structures keep to it in mixed
        steps too; the gather structure allocates its buffer once per step, in its first layer."""
        def host_traffic(*args, **kwargs):
            raise AssertionError("a layer moved data between host and device")

        readers = ("numpy", "item", "tolist", "cpu", "__array__", "__bool__", "__int__", "__float__")
        guarded = [mock.patch.object(paddle.Tensor, name, host_traffic) for name in readers
                   if hasattr(paddle.Tensor, name)]  # the set differs between Paddle versions
        guarded.append(mock.patch.object(paddle, "to_tensor", host_traffic))
        for place, backend_name in itertools.product(places(), BACKENDS):
            steps = plan(16) if backend_name != "gather" else plan(16)[2:]
            for encoder, decoder, this_time in steps:
                with self.subTest(place=place, backend=backend_name, this_time=this_time):
                    rng = seeded_rng(self, place, backend_name, this_time)
                    server = MirroredServer(rng, place, "block_wise_fp8", "bfloat16", 8, 2, 64, 16)
                    kv_end = np.full(sum(this_time), BIG, np.int32) if backend_name == "flash_mask" else None
                    meta = ForwardMeta.build(server.caches, server.tables, np.int32(encoder), np.int32(decoder),
                                             np.int32(this_time), kv_end=kv_end)
                    qkv = [from_numpy(ref.random_half(rng, (sum(this_time), h, 64), "bfloat16")[1], "bfloat16", place)
                           for h in (8, 2, 2)]
                    backend = BACKENDS[backend_name]()
                    with contextlib.ExitStack() as stack:
                        for patch in guarded:
                            stack.enter_context(patch)
                        for layer in server.layers:
                            backend.forward_mixed(*qkv, layer, meta)


class TestBadInput(unittest.TestCase):
    def setUp(self):
        self.caches = cache.allocate_kv_caches(2, 4, 2, 16, 64, "none")
        self.layer = types.SimpleNamespace(layer_id=1, cache_quant_type_str="none")
        self.tables = np.int32([[0, 1], [2, -1]])

    def build(self, **override):
        args = dict(caches=self.caches, block_tables=self.tables, seq_lens_encoder=np.int32([3, 0]),
                    seq_lens_decoder=np.int32([0, 5]), seq_lens_this_time=np.int32([3, 1]))
        return ForwardMeta.build(**{**args, **override})

    def test_forward_meta_build(self):
        cases = [
            (r"seq_lens_decoder: expected shape \[2\]", dict(seq_lens_decoder=np.int32([0]))),
            (r"seq_lens_this_time: lengths must be non-negative", dict(seq_lens_this_time=np.int32([3, -1]))),
            (r"seq_lens_encoder\[0\] = 2: .* must be 0 or seq_lens_this_time\[0\] = 3",
             dict(seq_lens_encoder=np.int32([2, 0]))),
            (r"block_tables\[1, 0\] = -1 is outside \[0, 4\)", dict(block_tables=np.int32([[0, 1], [-1, -1]]))),
            (r"block_tables: sequence 1 holds 40 tokens after this step, 3 blocks of 16, but the table has 2",
             dict(seq_lens_decoder=np.int32([0, 39]))),
            (r"kv_end: expected shape \[4\]", dict(kv_end=np.int32([1, 2]))),
            (r"caches: expected the server's list", dict(caches=[])),
        ]
        for message, override in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(ValueError, message):
                    self.build(**override)

    def test_host_values(self):
        meta = self.build()  # a 3-token prompt beside a decode after 5 tokens
        self.assertEqual((meta.num_tokens, meta.max_seqlen_q, meta.max_seqlen_kv, meta.multi_token_seqs),
                         (4, 3, 6, 1))

    def test_idle_slots_need_no_blocks(self):
        meta = self.build(block_tables=np.int32([[0, 1], [-1, -1]]), seq_lens_this_time=np.int32([3, 0]),
                          seq_lens_decoder=np.int32([0, 5]), seq_lens_encoder=np.int32([3, 0]))
        self.assertEqual((meta.num_tokens, meta.has_prefill, meta.has_decode), (3, True, False))

    def test_forward_mixed(self):
        meta = self.build()
        rows = lambda n, h: from_numpy(np.zeros((n, h, 64), np.float32), "bfloat16")  # noqa: E731
        with self.assertRaisesRegex(ValueError, r"q: expected shape \[4, \*, \*\], got \[3, 4, 64\]"):
            FlashAttentionBackend().forward_mixed(rows(3, 4), rows(3, 2), rows(3, 2), self.layer, meta)
        with self.assertRaisesRegex(ValueError, "FlashAttentionBackend does not apply flash-mask key limits"):
            FlashAttentionBackend().forward_mixed(rows(4, 4), rows(4, 2), rows(4, 2), self.layer,
                                                  self.build(kv_end=np.int32([1, 2, 3, 4])))
        with self.assertRaisesRegex(ValueError, "prefill_path: expected one of paged, gather"):
            FlashAttentionBackend(prefill_path="split")


if __name__ == "__main__":
    unittest.main()
