"""Writes a small batch of K/V into a paged cache of every quant type, reads it back and says
what happened.

    python -m fastattn.demo [--device cpu|gpu] [--tokens N]
"""
import argparse
import time

import numpy as np

from . import cache, ops
from . import reference as ref
from .tensors import from_numpy, gpu_available, to_numpy


def run(device, tokens, heads, head_dim, block_size, seed):
    rng = np.random.default_rng(seed)
    lengths = [tokens // 2, tokens - tokens // 2 - 1, 1]  # a long, a medium and a one-token sequence
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    k_vals, k_bits = ref.random_half(rng, (tokens, heads, head_dim), "bfloat16", scale=2.0)
    v_vals, v_bits = ref.random_half(rng, (tokens, heads, head_dim), "bfloat16")
    blocks_per_seq = -(-max(lengths) // block_size)
    num_blocks = len(lengths) * blocks_per_seq
    tables = rng.permutation(num_blocks).astype(np.int32).reshape(len(lengths), blocks_per_seq)
    t = lambda a, dtype=None: from_numpy(a, dtype, device)  # noqa: E731
    k, v = t(k_bits, "bfloat16"), t(v_bits, "bfloat16")
    print(f"fastattn demo on {device}: {len(lengths)} sequences of {lengths} tokens, {heads} kv heads, "
          f"head_dim {head_dim}, block_size {block_size}, {num_blocks} blocks in shuffled order\n")
    print(f"{'cache type':<16}{'bytes/token':>12}{'write ms':>10}{'read ms':>10}"
          f"{'max rel err':>13}{'mean rel err':>14}")
    for quant in cache.QUANT_TYPES:
        caches = cache.allocate_kv_caches(1, num_blocks, heads, block_size, head_dim, quant, place=device)
        scales = {}
        if quant in ("cache_int8", "cache_fp8"):
            absmax = [np.abs(x).max(axis=(0, 2)) for x in (k_vals, v_vals)]
            (qk, dk), (qv, dv) = (cache.static_scales(a, quant) for a in absmax)
            scales = dict(k_quant_scale=t(qk, "float32"), v_quant_scale=t(qv, "float32"))
            read = dict(k_dequant_scale=t(dk, "float32"), v_dequant_scale=t(dv, "float32"))
        elif quant == "block_wise_fp8":
            scales = read = dict(k_scale_cache=caches[2], v_scale_cache=caches[3])
        else:
            read = {}
        start = time.perf_counter()
        ops.write_cache_kv(k, v, caches[0], caches[1], t(tables), t(cu), t(np.zeros(3, np.int32)),
                           cache_quant_type=quant, **scales)
        to_numpy(caches[0])
        written = time.perf_counter()
        out = [t(np.zeros((tokens, heads, head_dim), np.float32), "bfloat16") for _ in range(2)]
        ops.append_cache_kv_c8(caches[0], caches[1], out[0], out[1], t(tables), t(np.ones(3, np.int32)),
                               t(np.int32(lengths)), t(cu), quant, **read)
        back = [ref.half_bits_to_float(to_numpy(o), "bfloat16").astype(np.float64) for o in out]
        done = time.perf_counter()
        errors = []
        for got, want in zip(back, (k_vals, v_vals)):
            rel = np.linalg.norm(got - want, axis=-1) / np.maximum(np.linalg.norm(want, axis=-1), 1e-30)
            errors.append(rel)
        errors = np.concatenate(errors)
        print(f"{quant:<16}{cache.cache_bytes_per_token(heads, head_dim, quant):>12}"
              f"{(written - start) * 1e3:>10.2f}{(done - written) * 1e3:>10.2f}"
              f"{errors.max():>13.2e}{errors.mean():>14.2e}")
    print("\nrelative error per (token, head) row: ||read back - written|| / ||written||; "
          "'none' must be 0, fp8 ~3e-2, int8 ~1e-2.")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="gpu" if gpu_available() else "cpu")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=128, choices=(64, 128, 256))
    parser.add_argument("--block-size", type=int, default=64, choices=(16, 32, 64, 128))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.device, args.tokens, args.heads, args.head_dim, args.block_size, args.seed)


if __name__ == "__main__":
    main()
