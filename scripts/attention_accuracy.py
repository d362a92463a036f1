"""Relative error ||out - ref|| / ||ref|| of the attention ops against the float64 references, per
input type, on each place (CPU, and the GPU where Paddle sees one). Prints a markdown table.

    PYTHONPATH=... python scripts/attention_accuracy.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from fastattn import cache, ops  # noqa: E402
from fastattn import reference as ref  # noqa: E402
from util import PagedBatch, cu_seqlens, float_values, from_numpy, places, rel_err  # noqa: E402


def varlen_error(place, rng, q_kind, kv_kind, lens, causal=True, hq=8, hkv=2, dim=128):
    """q_kind/kv_kind: "bfloat16", "float16" or "fp8" (codes of N(0, 1) * 64 with descale 1/64)."""
    def make(shape, kind):
        if kind == "fp8":
            codes = ref.float_to_e4m3(rng.standard_normal(shape).astype(np.float32) * 64)
            return from_numpy(codes, "uint8", place), ref.e4m3_to_float(codes) / 64
        values, _ = ref.random_half(rng, shape, kind)
        return from_numpy(values, kind, place), values
    cu = cu_seqlens(lens)
    (q, qr), (k, kr), (v, vr) = (make((sum(lens), h, dim), kind) for h, kind in ((hq, q_kind), (hkv, kv_kind),
                                                                                   (hkv, kv_kind)))
    descale = from_numpy(np.float32([1 / 64]), "float32", place)
    out, _ = ops.flash_attn_varlen(q, k, v, from_numpy(cu, None, place), from_numpy(cu, None, place), max(lens),
                                   max(lens), causal=causal, q_descale=descale if q_kind == "fp8" else None,
                                   k_descale=descale if kv_kind == "fp8" else None,
                                   v_descale=descale if kv_kind == "fp8" else None, out_dtype="float32")
    want, _ = ref.flash_attn_varlen(qr, kr, vr, cu, cu, dim ** -0.5, causal)
    return rel_err(float_values(out), want)


def paged_error(place, rng, quant, length, q_len=1, hq=8, hkv=2, dim=128, block_size=64):
    batch = PagedBatch(rng, block_size, [length])
    caches = cache.allocate_kv_caches(1, batch.num_blocks, hkv, block_size, dim, quant, place=place)
    layer = type("Layer", (), {"layer_id": 0, "cache_quant_type_str": quant})()
    k, _ = ref.random_half(rng, (length, hkv, dim), "bfloat16")
    v, _ = ref.random_half(rng, (length, hkv, dim), "bfloat16")
    if quant in ("cache_int8", "cache_fp8"):
        cache.set_static_scales(layer, [np.abs(x).max(axis=(0, 2)) for x in (k, v)], place)
    lc = cache.layer_caches(caches, layer)
    tables = from_numpy(batch.block_tables, None, place)
    ops.write_cache_kv(from_numpy(k, "bfloat16", place), from_numpy(v, "bfloat16", place), lc.key_cache,
                       lc.value_cache, tables, from_numpy(np.int32([0, length]), None, place),
                       from_numpy(np.int32([0]), None, place), **lc.write_args())
    from util import to_numpy
    real = [ref.dequantized_cache(to_numpy(c), quant, None if s is None else to_numpy(s),
                                  None if t is None else to_numpy(t), "bfloat16")
            for c, s, t in ((lc.key_cache, lc.k_dequant_scale, lc.k_scale_cache),
                            (lc.value_cache, lc.v_dequant_scale, lc.v_scale_cache))]
    q, _ = ref.random_half(rng, (q_len, hq, dim), "bfloat16")
    cq = np.int32([0, q_len])
    out, _ = ops.paged_attention(from_numpy(q, "bfloat16", place), lc.key_cache, lc.value_cache, tables,
                                 from_numpy(np.int32([length]), None, place), from_numpy(cq, None, place),
                                 out_dtype="float32", **lc.read_args())
    want, _ = ref.paged_attention(q, real[0], real[1], batch.block_tables, [length], cq, dim ** -0.5, True)
    return rel_err(float_values(out), want)


def main():
    rows = []
    for place in places():
        rng = np.random.default_rng(0)
        for q_kind, kv_kind in (("bfloat16", "bfloat16"), ("float16", "float16"), ("bfloat16", "fp8"),
                                ("float16", "fp8"), ("fp8", "fp8")):
            err = varlen_error(place, rng, q_kind, kv_kind, [1000, 17, 1])
            rows.append((place, "flash_attn_varlen, causal, lengths 1000/17/1", f"q {q_kind}, k/v {kv_kind}", err))
        for quant in ref.QUANT_TYPES:
            for length, q_len in ((1024, 1), (32768, 1), (1024, 64)):
                err = paged_error(place, rng, quant, length, q_len)
                rows.append((place, f"paged_attention, {length} keys, {q_len} queries", f"bf16 q, {quant}", err))
    print("| place | case | inputs | rel. error (fp32 out) |\n|---|---|---|---|")
    for place, case, inputs, err in rows:
        print(f"| {place} | {case} | {inputs} | {err:.2e} |")


if __name__ == "__main__":
    main()
