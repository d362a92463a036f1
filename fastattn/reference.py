"""NumPy references for every fastattn op, written for clarity rather than speed.

Quantization is pinned to float32 arithmetic (see DESIGN.md, "Numerics rules"), so the
references compute the quantized products in float32 exactly as the spec says and then
round with independently written conversions: nearest representable value found by search,
ties broken to the even code. Everything downstream of the stored bytes is float64.

Arrays of 16-bit floats are passed around as their uint16 bit patterns; `to_half_bits` and
`half_bits_to_float` convert. FP8 and int8 caches are uint8 bit patterns.
"""
import numpy as np

QUANT_TYPES = ("none", "cache_int8", "cache_fp8", "block_wise_fp8")
FP8_MAX = 448.0
INT8_MAX = 127.0
MIN_DYNAMIC_SCALE = np.float32(2.0 ** -64)
HALF_NAN_BITS = 0x7FFF
FP8_NAN_BYTE = 0x7F

# ----------------------------------------------------------------------------------------------
# 16-bit floats


def half_bits_to_float(bits, dtype):
    """uint16 bit patterns of bfloat16/float16 -> float32 values (exact)."""
    bits = np.asarray(bits, np.uint16)
    if dtype == "bfloat16":
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.view(np.float16).astype(np.float32)


def _bf16_round(x):
    # Candidates: the value truncated to bf16 and the next bf16 away from zero; pick the nearer,
    # ties to the even pattern. Infinity counts as 2^128 for this comparison.
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore"):
        return _bf16_round_impl(x)


def _bf16_round_impl(x):
    lo = (x.view(np.uint32) >> 16).astype(np.uint32)
    hi = lo + 1
    mag = np.abs(x.astype(np.float64))

    def magnitude(b):
        v = np.abs((b << 16).astype(np.uint32).view(np.float32).astype(np.float64))
        return np.where((b & 0x7FFF) == 0x7F80, 2.0 ** 128, v)

    d_lo, d_hi = mag - magnitude(lo), magnitude(hi) - mag
    take_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (lo % 2 == 1))
    exact_or_inf = np.isinf(x) | (d_lo == 0)
    out = np.where(take_hi & ~exact_or_inf, hi, lo).astype(np.uint16)
    return np.where(np.isnan(x), HALF_NAN_BITS, out).astype(np.uint16)


def to_half_bits(x, dtype):
    """float32 values -> uint16 bit patterns of bfloat16/float16, round to nearest even.
    NaN becomes the canonical 0x7fff."""
    x = np.asarray(x, np.float32)
    if dtype == "bfloat16":
        return _bf16_round(x)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is the rounding asked for
        out = x.astype(np.float16).view(np.uint16)
    return np.where(np.isnan(x), HALF_NAN_BITS, out).astype(np.uint16)


def random_half(rng, shape, dtype, scale=1.0):
    """Random normal values that are exactly representable in `dtype`: (float32 values, bits)."""
    bits = to_half_bits(rng.standard_normal(shape).astype(np.float32) * np.float32(scale), dtype)
    return half_bits_to_float(bits, dtype), bits


# ----------------------------------------------------------------------------------------------
# e4m3fn and int8


def _e4m3_values():
    """The float64 value of each of the 256 e4m3fn patterns (exact; 0x7f/0xff -> NaN)."""
    b = np.arange(256, dtype=np.int64)
    exp, mant = (b >> 3) & 0xF, b & 0x7
    mag = np.where(exp == 0, mant / 8.0 * 2.0 ** -6, (1 + mant / 8.0) * 2.0 ** (exp - 7.0))
    mag = np.where((b & 0x7F) == 0x7F, np.nan, mag)
    return np.where(b & 0x80, -mag, mag)


_E4M3_VALUES = _e4m3_values()
_E4M3_MAGNITUDES = _E4M3_VALUES[:0x7F]  # codes 0x00..0x7e, ascending


def e4m3_to_float(b):
    """uint8 e4m3fn patterns -> float64 values (exact; 0x7f/0xff -> NaN)."""
    return _E4M3_VALUES[np.asarray(b, np.uint8)]


def float_to_e4m3(y):
    """float32 values -> e4m3fn patterns: clamp to +-448, nearest code, ties to the even code.
    NaN -> 0x7f. The sign survives rounding to zero."""
    y = np.asarray(y, np.float32).astype(np.float64)
    nan = np.isnan(y)
    mag = np.minimum(np.abs(np.where(nan, 0.0, y)), FP8_MAX)
    hi = np.clip(np.searchsorted(_E4M3_MAGNITUDES, mag, side="left"), 0, 0x7E)
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = mag - _E4M3_MAGNITUDES[lo], _E4M3_MAGNITUDES[hi] - mag
    code = np.where((d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0)), hi, lo)
    code = code | np.where(np.signbit(y), 0x80, 0)
    return np.where(nan, FP8_NAN_BYTE, code).astype(np.uint8)


def float_to_int8(y):
    """float32 values -> int8 two's-complement patterns (as uint8): round half to even, clamp
    to +-127. NaN -> 0 (int8 has no NaN)."""
    y = np.asarray(y, np.float32).astype(np.float64)
    q = np.clip(np.rint(np.where(np.isnan(y), 0.0, y)), -INT8_MAX, INT8_MAX)
    return q.astype(np.int8).view(np.uint8)


def int8_to_float(b):
    return np.asarray(b, np.uint8).view(np.int8).astype(np.float64)


def dynamic_scale(amax):
    """block_wise_fp8 per-row scale: (dequant scale, quant multiplier), float32."""
    amax = np.float32(amax)
    scale = np.maximum(np.float32(amax / np.float32(FP8_MAX)), MIN_DYNAMIC_SCALE)
    return np.float32(scale), np.float32(np.float32(1.0) / scale)


def quantize(y_times_scale, cache_quant_type):
    if cache_quant_type == "cache_int8":
        return float_to_int8(y_times_scale)
    return float_to_e4m3(y_times_scale)


def dequantize(b, cache_quant_type):
    return int8_to_float(b) if cache_quant_type == "cache_int8" else e4m3_to_float(b)


# ----------------------------------------------------------------------------------------------
# Paged KV cache


def cache_row(block_tables, num_blocks, block_size, seq, pos):
    """(block, slot) of position `pos` of sequence `seq`, or None where the table maps it to no
    block of the cache (-1, out of range, or past the table's width)."""
    logical = pos // block_size
    if logical >= block_tables.shape[1]:
        return None
    block = int(block_tables[seq, logical])
    if not 0 <= block < num_blocks:
        return None
    return block, pos % block_size


def store_scale(value, scale_dtype):
    """A scale as it reads back from a table of `scale_dtype` (float32 or bf16)."""
    if scale_dtype == "bfloat16":
        return half_bits_to_float(to_half_bits(np.float32(value), "bfloat16"), "bfloat16")
    return np.float32(value)


def write_cache_kv(k, v, key_cache, value_cache, block_tables, cu_seqlens_q, seq_lens_decoder,
                   cache_quant_type, k_quant_scale=None, v_quant_scale=None, k_scale_cache=None,
                   v_scale_cache=None, dtype="bfloat16"):
    """Reference of fastattn.ops.write_cache_kv on numpy arrays; returns updated copies.

    k, v: float32 [tokens, heads, head_dim] holding `dtype` values exactly. Caches: uint16 bit
    patterns for "none", uint8 otherwise. Static scales: float32 [heads]. Scale tables: float32
    or bf16-bit (uint16) arrays [blocks, heads, block_size]. Returns (key_cache, value_cache,
    k_scale_cache, v_scale_cache) with None for absent tables.
    """
    caches = [np.array(key_cache), np.array(value_cache)]
    tables = [None if t is None else np.array(t) for t in (k_scale_cache, v_scale_cache)]
    static = [k_quant_scale, v_quant_scale]
    block_size = caches[0].shape[2]
    for seq in range(block_tables.shape[0]):
        for token in range(cu_seqlens_q[seq], cu_seqlens_q[seq + 1]):
            if token >= k.shape[0]:
                break
            where = cache_row(block_tables, caches[0].shape[0], block_size, seq,
                              int(seq_lens_decoder[seq]) + token - int(cu_seqlens_q[seq]))
            if where is None:
                continue
            block, slot = where
            for i, x in enumerate((k, v)):
                for h in range(x.shape[1]):
                    row = np.asarray(x[token, h], np.float32)
                    if cache_quant_type == "none":
                        caches[i][block, h, slot] = to_half_bits(row, dtype)
                    elif cache_quant_type == "block_wise_fp8":
                        magnitudes = np.abs(row[~np.isnan(row)])  # NaN, quiet or signaling, never counts
                        scale, inv = dynamic_scale(magnitudes.max(initial=np.float32(0)))
                        caches[i][block, h, slot] = float_to_e4m3(row * inv)
                        table = tables[i]
                        if table.dtype == np.uint16:
                            table[block, h, slot] = to_half_bits(scale, "bfloat16")
                        else:
                            table[block, h, slot] = scale
                    else:
                        mult = np.float32(static[i][h])
                        caches[i][block, h, slot] = quantize(row * mult, cache_quant_type)
    return caches[0], caches[1], tables[0], tables[1]


def append_cache_kv(key_cache, value_cache, k_out, v_out, block_tables, seq_lens_this_time,
                    seq_lens_decoder, cu_seqlens_k, cache_quant_type, k_dequant_scale=None,
                    v_dequant_scale=None, k_scale_cache=None, v_scale_cache=None, dtype="bfloat16"):
    """Reference of fastattn.ops.append_cache_kv_c8; k_out/v_out are uint16 bit patterns,
    returns updated copies. Scale tables may be float32 or bf16 bits (uint16)."""
    outs = [np.array(k_out), np.array(v_out)]
    caches = [key_cache, value_cache]
    static = [k_dequant_scale, v_dequant_scale]
    tables = [k_scale_cache, v_scale_cache]
    block_size = key_cache.shape[2]
    for seq in range(block_tables.shape[0]):
        if seq_lens_this_time[seq] <= 0:
            continue
        n = min(int(seq_lens_decoder[seq]), int(cu_seqlens_k[seq + 1]) - int(cu_seqlens_k[seq]))
        for t in range(n):
            where = cache_row(block_tables, key_cache.shape[0], block_size, seq, t)
            if where is None:
                continue
            block, slot = where
            for i in range(2):
                stored = caches[i][block, :, slot]  # [heads, head_dim]
                if cache_quant_type == "none":
                    outs[i][cu_seqlens_k[seq] + t] = stored
                    continue
                if cache_quant_type == "block_wise_fp8":
                    table = tables[i]
                    mult = table[block, :, slot]
                    if table.dtype == np.uint16:
                        mult = half_bits_to_float(mult, "bfloat16")
                else:
                    mult = static[i]
                values = dequantize(stored, cache_quant_type).astype(np.float32)
                product = values * np.asarray(mult, np.float32)[:, None]
                outs[i][cu_seqlens_k[seq] + t] = to_half_bits(product, dtype)
    return outs[0], outs[1]


def dequantized_cache(cache, cache_quant_type, dequant_scale=None, scale_cache=None,
                      dtype="bfloat16"):
    """The real (float64) values a cache holds, [blocks, heads, block_size, head_dim]."""
    if cache_quant_type == "none":
        return half_bits_to_float(cache, dtype).astype(np.float64)
    values = dequantize(cache, cache_quant_type)
    if cache_quant_type == "block_wise_fp8":
        scales = scale_cache
        if scales.dtype == np.uint16:
            scales = half_bits_to_float(scales, "bfloat16")
        return values * np.asarray(scales, np.float64)[..., None]
    return values * np.asarray(dequant_scale, np.float64)[None, :, None, None]


# ----------------------------------------------------------------------------------------------
# merge_attn_states


def merge_attn_states(prefix_output, prefix_lse, suffix_output, suffix_lse):
    """Reference of fastattn.ops.merge_attn_states in float64.

    prefix_output, suffix_output: [tokens, heads, head_dim]; lses: [heads, tokens] natural log,
    +inf read as -inf. A side with lse -inf has weight 0 whatever its output holds. Returns
    (out [tokens, heads, head_dim], lse [heads, tokens]); rows empty on both sides give 0 and -inf.
    """
    def clean(lse):
        lse = np.asarray(lse, np.float64).T  # [tokens, heads]
        return np.where(np.isnan(lse) | np.isposinf(lse), -np.inf, lse)

    lp, ls = clean(prefix_lse), clean(suffix_lse)
    m = np.maximum(lp, ls)
    empty = m == -np.inf
    m_safe = np.where(empty, 0.0, m)
    with np.errstate(invalid="ignore", over="ignore"):
        wp = np.where(lp == -np.inf, 0.0, np.exp(lp - m_safe))
        ws = np.where(ls == -np.inf, 0.0, np.exp(ls - m_safe))
    total = np.where(empty, 1.0, wp + ws)
    po = np.where(wp[..., None] > 0, np.asarray(prefix_output, np.float64), 0.0)
    so = np.where(ws[..., None] > 0, np.asarray(suffix_output, np.float64), 0.0)
    out = (wp[..., None] * po + ws[..., None] * so) / total[..., None]
    lse = np.where(empty, -np.inf, m_safe + np.log(total))
    return out, lse.T


def quantize_fp8_output(x, output_scale):
    """e4m3(x * (1 / scale)) with float32 arithmetic: the fused FP8 output of an op, from the
    float32 values it computed (one IEEE division for the inverse, one multiply per element)."""
    inv = np.float32(np.float32(1.0) / np.float32(output_scale))
    return float_to_e4m3(np.asarray(x, np.float32) * inv)


# ----------------------------------------------------------------------------------------------
# MXFP4

E2M1_MAGNITUDES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
MX_BLOCK = 32
MX_NAN_SCALE = 0xFF


def float_to_e2m1(y):
    """Values -> e2m1 codes (uint8, 0..15): nearest magnitude, ties to the even code, saturating
    at 6, sign bit kept (also on zero). NaN -> a signed zero."""
    y = np.asarray(y, np.float64)
    mag = np.minimum(np.abs(np.where(np.isnan(y), 0.0, y)), 6.0)
    hi = np.clip(np.searchsorted(E2M1_MAGNITUDES, mag, side="left"), 0, 7)
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = mag - E2M1_MAGNITUDES[lo], E2M1_MAGNITUDES[hi] - mag
    code = np.where((d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0)), hi, lo)
    return (code | np.where(np.signbit(y), 8, 0)).astype(np.uint8)


def e2m1_to_float(codes):
    codes = np.asarray(codes, np.uint8)
    mag = E2M1_MAGNITUDES[codes & 7]
    return np.where(codes & 8, -mag, mag)


def mx_scale_exponent(amax):
    """Smallest e with amax <= 6 * 2^e, amax floored at 6 * 2^-126, clamped to [-127, 127]
    (exact float64 search rather than a rounded log2)."""
    amax = max(float(amax), 6.0 * 2.0 ** -126)
    if np.isinf(amax):
        return 127
    e = int(np.ceil(np.log2(amax / 6.0)))
    while 6.0 * 2.0 ** (e - 1) >= amax:
        e -= 1
    while 6.0 * 2.0 ** e < amax:
        e += 1
    return int(np.clip(e, -127, 127))


def quant_mxfp4(x):
    """Reference of fastattn.ops.quant_mxfp4 on float32 values x [..., D], D % 32 == 0.

    Returns (packed uint8 [..., D/2] with the even element in the low nibble, scales uint8
    [..., D/32] = e + 127). A block holding NaN gets scale 0xff and zero codes. The scaling
    x * 2^-e is done in float32, as the kernels do (exact but for results far below 0.25).
    """
    x = np.asarray(x, np.float32)
    blocks = x.reshape(-1, MX_BLOCK)
    packed = np.zeros((blocks.shape[0], MX_BLOCK // 2), np.uint8)
    scales = np.zeros(blocks.shape[0], np.uint8)
    for i, block in enumerate(blocks):
        if np.isnan(block).any():
            scales[i] = MX_NAN_SCALE
            continue
        e = mx_scale_exponent(np.max(np.abs(block)))
        scales[i] = e + 127
        codes = float_to_e2m1(block * np.float32(2.0 ** -e))
        packed[i] = codes[0::2] | (codes[1::2] << 4)
    lead = x.shape[:-1]
    return packed.reshape(*lead, x.shape[-1] // 2), scales.reshape(*lead, x.shape[-1] // MX_BLOCK)


def dequant_mxfp4(packed, scales):
    """float64 values of MXFP4 data; a 0xff scale gives NaN for its whole block."""
    packed = np.asarray(packed, np.uint8)
    codes = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)
    values = e2m1_to_float(codes)
    s = np.asarray(scales, np.uint8)
    mult = np.where(s == MX_NAN_SCALE, np.nan, 2.0 ** (s.astype(np.float64) - 127))
    return values * np.repeat(mult, MX_BLOCK, axis=-1)


# ----------------------------------------------------------------------------------------------
# Attention


def attention(q, k, v, softmax_scale, causal, kv_end=None, key_present=None):
    """float64 attention of one sequence. q [Lq, Hq, D], k/v [Lk, Hkv, D] (real values, any
    descales already applied), Hq a multiple of Hkv (grouped-query). Causal masking is
    bottom-right aligned: query i sees keys j <= i + Lk - Lq. kv_end [Lq] further limits query i
    to keys j < kv_end[i]; key_present [Lk] (bool) hides the keys where it is False. Returns
    (out [Lq, Hq, D], lse [Hq, Lq]); a query with no visible key gets out 0 and lse -inf."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    lq, hq, _ = q.shape
    lk, hkv = k.shape[:2]
    k = np.repeat(k, hq // hkv, axis=1)
    v = np.repeat(v, hq // hkv, axis=1)
    # Batched matmuls over heads: numpy hands them to BLAS, where einsum would loop in C.
    scores = np.matmul(q.transpose(1, 0, 2), k.transpose(1, 2, 0)) * softmax_scale
    i, j = np.arange(lq)[:, None], np.arange(lk)[None, :]
    visible = np.ones((lq, lk), bool)
    if causal:
        visible &= j <= i + lk - lq
    if kv_end is not None:
        visible &= j < np.asarray(kv_end)[:, None]
    if key_present is not None:
        visible &= np.asarray(key_present, bool)[None, :]
    scores = np.where(visible[None], scores, -np.inf)
    m = scores.max(axis=-1, initial=-np.inf)
    empty = m == -np.inf
    p = np.where(visible[None], np.exp(scores - np.where(empty, 0.0, m)[..., None]), 0.0)
    total = p.sum(axis=-1)
    out = np.matmul(p, v.transpose(1, 0, 2)).transpose(1, 0, 2) / np.where(empty, 1.0, total).T[..., None]
    lse = np.where(empty, -np.inf, m + np.log(np.where(empty, 1.0, total)))
    return out, lse


def flash_attn_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, softmax_scale, causal):
    """Packed varlen batch of `attention`: q [Tq, Hq, D], k/v [Tk, Hkv, D] real values."""
    out = np.zeros(np.shape(q), np.float64)
    lse = np.full((np.shape(q)[1], np.shape(q)[0]), -np.inf)
    for b in range(len(cu_seqlens_q) - 1):
        qs, qe, ks, ke = cu_seqlens_q[b], cu_seqlens_q[b + 1], cu_seqlens_k[b], cu_seqlens_k[b + 1]
        if qe > qs:
            out[qs:qe], lse[:, qs:qe] = attention(q[qs:qe], k[ks:ke], v[ks:ke], softmax_scale, causal)
    return out, lse


def paged_attention(q, key_values, value_values, block_tables, seq_lens_kv, cu_seqlens_q,
                    softmax_scale, causal, kv_end=None):
    """Attention over a paged cache whose real values are key_values/value_values
    [num_blocks, Hkv, block_size, D] (see dequantized_cache). Sequence b's queries are its last
    cu_seqlens_q[b+1] - cu_seqlens_q[b] positions of seq_lens_kv[b] keys. Positions the block
    table maps to no block hold no key (every kernel skips them)."""
    block_size = key_values.shape[2]
    out = np.zeros(np.shape(q), np.float64)
    lse = np.full((np.shape(q)[1], np.shape(q)[0]), -np.inf)
    for b in range(len(cu_seqlens_q) - 1):
        qs, qe, lk = cu_seqlens_q[b], cu_seqlens_q[b + 1], int(seq_lens_kv[b])
        if qe == qs:
            continue
        rows = [cache_row(block_tables, key_values.shape[0], block_size, b, j) for j in range(lk)]
        present = np.array([r is not None for r in rows], bool)
        rows = [r if r is not None else (0, 0) for r in rows]
        empty = np.zeros((0,) + key_values.shape[1:2] + key_values.shape[3:])
        k = np.stack([key_values[blk, :, slot] for blk, slot in rows]) if lk else empty
        v = np.stack([value_values[blk, :, slot] for blk, slot in rows]) if lk else empty
        ends = None if kv_end is None else kv_end[qs:qe]
        out[qs:qe], lse[:, qs:qe] = attention(q[qs:qe], k, v, softmax_scale, causal, ends, present)
    return out, lse
