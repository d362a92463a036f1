"""fastattn ops, called like paddle.incubate.nn.functional: tensors first, attributes as keywords.

Every op runs on the CPU and on CUDA GPUs (where the extension was built with nvcc). Inputs are
validated here, before any kernel runs: a bad dtype, shape or device raises TypeError/ValueError
naming the argument, what was expected and what was received. Tensors must be contiguous (the
kernels read packed rows): the checks refuse a strided view with ValueError, and so does the
dygraph fast path when they are skipped. The per-layer ops take check_inputs=False for callers
that built their arguments themselves (fastattn.backends): the Python checks, about 150 us of host
time a call, are skipped and the C++ op's own checks of shapes, dtypes and devices raise
RuntimeError instead.

Block tables: an entry outside [0, num_blocks) for a position an op must read or write is never
dereferenced (that row is skipped). With `validate=True`, or the environment variable
FASTATTN_VALIDATE=1, the ops also copy the small batch tensors to the host and raise ValueError
for such entries; this costs a device-to-host sync per call, so it is off by default and must stay
off inside CUDA-graph capture.

Batch offsets: the attention ops need cu_seqlens non-decreasing within the packed tensors, and
cu_seqlens_q starting at 0. They are checked always where they are on the CPU, and by `validate`
where they are on the GPU, whose kernels otherwise trust them.

In dygraph mode the per-layer ops (write_cache_kv, append_cache_kv_c8, flash_attn_varlen,
paged_attention, merge_attn_states) call their C++ functions through a Python module in the
same library (fastattn._ext.fast_module) instead of Paddle's op dispatcher, which takes 20-50 us
of host time per call; static graphs use the registered ops. Both run the same code. In a static
program (paddle.static, paddle.jit.to_static) the checks that need data, devices or strides are
left out, and sizes of -1 (known when the program runs) match any.
"""
import numpy as np
import paddle

from . import _checks
from ._ext import fast_module, ops_module
from .cache import QUANT_TYPES
from .tensors import fp8_dtype

FLOAT_DTYPES = ("bfloat16", "float16", "float32")


def _graph_op(wrapper):
    """An op's wrapper is one node of a program that paddle.jit.to_static builds: it runs as written,
    with the program's values, rather than being traced or rewritten with the model's code (Paddle
    3's `unified` covers both ways of converting; Paddle 2.6's `not_to_static` the rewriting)."""
    marker = getattr(paddle.jit, "marker", None)
    if marker is not None and hasattr(marker, "unified"):
        return marker.unified(wrapper)
    return paddle.jit.not_to_static(wrapper)


def _run(name, *args):
    """Op `name` (registered as fastattn_<name>) on its arguments: through the fast path in
    dygraph mode where it loaded, else through Paddle's op dispatcher. The fast path's in-place
    ops return None."""
    fast = fast_module() if paddle.in_dynamic_mode() else None
    if fast is not None:
        return getattr(fast, name)(*args)
    return getattr(ops_module(), "fastattn_" + name)(*args)


def _fp8_out_dtype():
    """The dtype of fp8 outputs: float8_e4m3fn where this Paddle has it, else uint8 bits."""
    return "float8_e4m3fn" if fp8_dtype() is not None else "uint8"


def _check_cache_pair(key_cache, value_cache, cache_quant_type, rows_name, rows, rows_dtypes=_checks.HALF_DTYPES,
                      grouped_heads=False, written=()):
    """Checks a layer's key/value cache against the rows written to or read from it (16-bit, or
    `rows_dtypes`; with grouped_heads, queries whose heads need only be a multiple of the cache's;
    `written`: the names of those the op writes); returns (num_blocks, kv_num_heads, block_size,
    head_dim)."""
    _checks.choice("cache_quant_type", cache_quant_type, QUANT_TYPES)
    _checks.tensor(rows_name, rows, rows_dtypes, [None, None, None], written=rows_name in written)
    cache_dtypes = (_checks.dtype_name(rows),) if cache_quant_type == "none" else _checks.BYTE_DTYPES
    _checks.tensor("key_cache", key_cache, cache_dtypes, [None, None, None, None], written="key_cache" in written)
    num_blocks, heads, block_size, head_dim = key_cache.shape
    _checks.tensor("value_cache", value_cache, cache_dtypes, list(key_cache.shape),
                   written="value_cache" in written)
    if _checks.dtype_name(value_cache) != _checks.dtype_name(key_cache):
        raise TypeError(f"value_cache: expected the dtype of key_cache ({_checks.dtype_name(key_cache)}), "
                        f"got {_checks.dtype_name(value_cache)}")
    _checks.choice("head_dim (key_cache.shape[3])", head_dim, _checks.HEAD_DIMS)
    _checks.choice("block_size (key_cache.shape[2])", block_size, _checks.BLOCK_SIZES)
    if grouped_heads:
        if rows.shape[2] != head_dim:
            raise ValueError(f"{rows_name}: head_dim {rows.shape[2]} differs from key_cache's {head_dim}")
    elif rows.shape[1] != heads or rows.shape[2] != head_dim:
        raise ValueError(f"{rows_name}: expected [tokens, {heads}, {head_dim}] to match key_cache "
                         f"[num_blocks, kv_num_heads, block_size, head_dim] = {list(key_cache.shape)}, "
                         f"got {list(rows.shape)}")
    _check_rows_aligned(**{rows_name: rows, "key_cache": key_cache, "value_cache": value_cache})
    return num_blocks, heads, block_size, head_dim


def _check_rows_aligned(**named):
    """Activations, K/V rows and caches: the GPU kernels move their rows 16 bytes at a time."""
    for name, t in named.items():
        _checks.gpu_alignment(name, t, 16)


def _check_scales(cache_quant_type, heads, table_shape, static_names, static, table_names, tables,
                  tables_written=False):
    """Static types need per-head scales, block_wise_fp8 needs scale tables (written by the op
    where `tables_written`), none needs neither."""
    for kind, names, values, shape in (("static", static_names, static, [heads]),
                                       ("table", table_names, tables, table_shape)):
        needed = (cache_quant_type in ("cache_int8", "cache_fp8")) if kind == "static" else \
            cache_quant_type == "block_wise_fp8"
        for name, value in zip(names, values):
            if not needed:
                _checks.absent(name, value, f"for cache_quant_type {cache_quant_type!r}")
            elif value is None:
                raise ValueError(f"{name}: required for cache_quant_type {cache_quant_type!r}")
            else:
                _checks.tensor(name, value, _checks.SCALE_DTYPES, shape, written=tables_written and kind == "table")


@_graph_op
def write_cache_kv(k, v, key_cache, value_cache, block_tables, cu_seqlens_q, seq_lens_decoder,
                   cache_quant_type="none", k_quant_scale=None, v_quant_scale=None,
                   k_scale_cache=None, v_scale_cache=None, validate=None, check_inputs=True):
    """Writes this step's K/V into a layer's paged cache, quantizing on the way. In place.

    Args:
        k, v: [num_tokens, kv_num_heads, head_dim] bfloat16/float16, packed by cu_seqlens_q.
        key_cache, value_cache: [num_blocks, kv_num_heads, block_size, head_dim]; k's dtype for
            "none", uint8 or float8_e4m3fn for the quantized types. Mutated.
        block_tables: int32 [batch, max_blocks_per_seq]; -1 marks unused entries.
        cu_seqlens_q: int32 [batch + 1]; sequence b owns tokens cu_seqlens_q[b] .. [b+1] - 1.
        seq_lens_decoder: int32 [batch]; tokens already cached for each sequence. Token i of
            sequence b goes to position seq_lens_decoder[b] + i - cu_seqlens_q[b].
        cache_quant_type: "none", "cache_int8", "cache_fp8" or "block_wise_fp8".
        k_quant_scale, v_quant_scale: float32/bfloat16 [kv_num_heads]; the quant multipliers
            (bound / absmax) of cache_int8 and cache_fp8: byte = round(x * scale).
        k_scale_cache, v_scale_cache: float32/bfloat16 [num_blocks, kv_num_heads, block_size],
            block_wise_fp8 only; each written row's dequant scale max(amax/448, 2^-64) is stored
            at its (block, head, slot). Mutated.
        validate: check block tables on the host first (see the module docstring).
        check_inputs: False skips the Python checks (see the module docstring).

    Returns:
        The mutated tensors: (key_cache, value_cache), plus (k_scale_cache, v_scale_cache) for
        block_wise_fp8.

    NaN policy: a NaN element is stored as the e4m3 NaN byte 0x7f, or 0 in an int8 cache. In a
    block_wise_fp8 row, NaN does not count towards amax; an inf makes the row's scale inf.
    """
    if check_inputs:
        num_blocks, heads, block_size, head_dim = _check_cache_pair(
            key_cache, value_cache, cache_quant_type, "k", k, written=("key_cache", "value_cache"))
        _checks.tensor("v", v, (_checks.dtype_name(k),), list(k.shape))
        _check_rows_aligned(v=v)
        _checks.tensor("block_tables", block_tables, ("int32",), [None, None])
        batch = block_tables.shape[0]
        _checks.tensor("cu_seqlens_q", cu_seqlens_q, ("int32",), [_checks.plus(batch, 1)])
        _checks.tensor("seq_lens_decoder", seq_lens_decoder, ("int32",), [batch])
        _check_scales(cache_quant_type, heads, [num_blocks, heads, block_size],
                      ("k_quant_scale", "v_quant_scale"), (k_quant_scale, v_quant_scale),
                      ("k_scale_cache", "v_scale_cache"), (k_scale_cache, v_scale_cache), tables_written=True)
        _checks.same_place(k=k, v=v, key_cache=key_cache, value_cache=value_cache,
                           block_tables=block_tables, cu_seqlens_q=cu_seqlens_q,
                           seq_lens_decoder=seq_lens_decoder, k_quant_scale=k_quant_scale,
                           v_quant_scale=v_quant_scale, k_scale_cache=k_scale_cache,
                           v_scale_cache=v_scale_cache)
    if _checks.validation_enabled(validate, k):
        num_blocks, _, block_size, _ = key_cache.shape
        batch = block_tables.shape[0]
        cu = _checks.host(cu_seqlens_q)
        _checks.cu_seqlens("cu_seqlens_q", cu, k.shape[0])
        cached = _checks.host(seq_lens_decoder)
        _checks.non_negative("seq_lens_decoder", np.where(np.diff(cu) > 0, cached, 0))
        spans = {b: (int(cached[b]), int(cached[b]) + int(cu[b + 1] - cu[b])) for b in range(batch)}
        _checks.block_table_entries(block_tables, num_blocks, block_size, spans)

    if cache_quant_type == "block_wise_fp8":
        _run("write_cache_kv_dynamic", k, v, key_cache, value_cache, k_scale_cache, v_scale_cache, block_tables,
             cu_seqlens_q, seq_lens_decoder)
        return key_cache, value_cache, k_scale_cache, v_scale_cache
    _run("write_cache_kv", k, v, key_cache, value_cache, block_tables, cu_seqlens_q, seq_lens_decoder,
         k_quant_scale, v_quant_scale, cache_quant_type)
    return key_cache, value_cache


@_graph_op
def append_cache_kv_c8(key_cache, value_cache, k_out, v_out, block_tables, seq_lens_this_time,
                       seq_lens_decoder, cu_seqlens_k, cache_quant_type, k_dequant_scale=None,
                       v_dequant_scale=None, k_scale_cache=None, v_scale_cache=None,
                       validate=None, check_inputs=True):
    """Dequantizes each active sequence's cached prefix into bf16/fp16 rows. In place.

    For every sequence b with seq_lens_this_time[b] > 0, cached positions
    0 .. seq_lens_decoder[b] - 1 are written to rows cu_seqlens_k[b] + t of k_out/v_out, so that
    the prefix sits in front of this step's new tokens for a varlen attention. Other rows are
    left untouched. Value: round-to-nearest-even of float(byte) * dequant scale.

    Args:
        key_cache, value_cache: [num_blocks, kv_num_heads, block_size, head_dim] as written by
            write_cache_kv (uint8/float8_e4m3fn, or bfloat16/float16 for "none").
        k_out, v_out: [total_k_tokens, kv_num_heads, head_dim] bfloat16/float16. Mutated.
        block_tables: int32 [batch, max_blocks_per_seq].
        seq_lens_this_time: int32 [batch]; 0 marks an idle sequence (nothing gathered).
        seq_lens_decoder: int32 [batch]; cached prefix length of each sequence.
        cu_seqlens_k: int32 [batch + 1]; row offsets of each sequence in k_out/v_out. Only rows
            inside a sequence's own span are written.
        cache_quant_type: "none", "cache_int8", "cache_fp8" or "block_wise_fp8".
        k_dequant_scale, v_dequant_scale: float32/bfloat16 [kv_num_heads]; static types.
        k_scale_cache, v_scale_cache: float32/bfloat16 [num_blocks, kv_num_heads, block_size];
            block_wise_fp8.
        validate: check block tables and spans on the host first (see the module docstring).
        check_inputs: False skips the Python checks (see the module docstring).

    Returns:
        (k_out, v_out), the mutated tensors.
    """
    if check_inputs:
        num_blocks, heads, block_size, head_dim = _check_cache_pair(
            key_cache, value_cache, cache_quant_type, "k_out", k_out, written=("k_out",))
        _checks.tensor("v_out", v_out, (_checks.dtype_name(k_out),), list(k_out.shape), written=True)
        _check_rows_aligned(v_out=v_out)
        _checks.tensor("block_tables", block_tables, ("int32",), [None, None])
        batch = block_tables.shape[0]
        _checks.tensor("seq_lens_this_time", seq_lens_this_time, ("int32",), [batch])
        _checks.tensor("seq_lens_decoder", seq_lens_decoder, ("int32",), [batch])
        _checks.tensor("cu_seqlens_k", cu_seqlens_k, ("int32",), [_checks.plus(batch, 1)])
        _check_scales(cache_quant_type, heads, [num_blocks, heads, block_size],
                      ("k_dequant_scale", "v_dequant_scale"), (k_dequant_scale, v_dequant_scale),
                      ("k_scale_cache", "v_scale_cache"), (k_scale_cache, v_scale_cache))
        _checks.same_place(key_cache=key_cache, value_cache=value_cache, k_out=k_out, v_out=v_out,
                           block_tables=block_tables, seq_lens_this_time=seq_lens_this_time,
                           seq_lens_decoder=seq_lens_decoder, cu_seqlens_k=cu_seqlens_k,
                           k_dequant_scale=k_dequant_scale, v_dequant_scale=v_dequant_scale,
                           k_scale_cache=k_scale_cache, v_scale_cache=v_scale_cache)
    if _checks.validation_enabled(validate, k_out):
        num_blocks, _, block_size, _ = key_cache.shape
        batch = block_tables.shape[0]
        cu = _checks.host(cu_seqlens_k)
        _checks.cu_seqlens("cu_seqlens_k", cu, k_out.shape[0])
        active, cached = _checks.host(seq_lens_this_time), _checks.host(seq_lens_decoder)
        _checks.non_negative("seq_lens_decoder", np.where(active > 0, cached, 0))
        for b in range(batch):
            if active[b] > 0 and cached[b] > cu[b + 1] - cu[b]:
                raise ValueError(f"cu_seqlens_k: sequence {b} has {cu[b + 1] - cu[b]} rows in k_out "
                                 f"but seq_lens_decoder[{b}] = {cached[b]} cached tokens to gather")
        spans = {b: (0, int(cached[b])) for b in range(batch) if active[b] > 0}
        _checks.block_table_entries(block_tables, num_blocks, block_size, spans)

    scale_k = k_scale_cache if cache_quant_type == "block_wise_fp8" else k_dequant_scale
    scale_v = v_scale_cache if cache_quant_type == "block_wise_fp8" else v_dequant_scale
    _run("append_cache_kv_c8", key_cache, value_cache, k_out, v_out, block_tables, seq_lens_this_time,
         seq_lens_decoder, cu_seqlens_k, scale_k, scale_v, cache_quant_type)
    return k_out, v_out


@_graph_op
def merge_attn_states(prefix_output, prefix_lse, suffix_output, suffix_lse, output_scale=None,
                      out_dtype=None, check_inputs=True):
    """Merges two partial attention results over disjoint key sets by their log-sum-exps.

    With m = max(lse_p, lse_s): out = (exp(lse_p - m) * prefix + exp(lse_s - m) * suffix) / sum,
    lse = m + log(sum), in fp32. An lse of +inf or NaN counts as -inf. A side with lse -inf
    contributes nothing (its output is never read into the sum); both sides -inf give out 0 and
    lse -inf.

    Args:
        prefix_output, suffix_output: [tokens, heads, head_dim] bfloat16/float16/float32, same dtype.
        prefix_lse, suffix_lse: float32 [heads, tokens] (the layout attention returns), natural log.
        output_scale: optional float32 tensor of one element on the same device. When given, the
            output is FP8 e4m3fn computed in the same pass: e4m3(clamp(x / scale, -448, 448)),
            round to nearest even, with the division done once (x * (1 / scale) per element).
        out_dtype: "bfloat16", "float16" or "float32" (default: the inputs' dtype); with
            output_scale, float8_e4m3fn (uint8 bits on a Paddle without that dtype).
        check_inputs: False skips the Python checks (see the module docstring).

    Returns:
        (out [tokens, heads, head_dim], lse float32 [heads, tokens]).
    """
    if check_inputs:
        _checks.tensor("prefix_output", prefix_output, FLOAT_DTYPES, [None, None, None])
        tokens, heads, _ = prefix_output.shape
        _checks.tensor("suffix_output", suffix_output, (_checks.dtype_name(prefix_output),),
                       list(prefix_output.shape))
        for name, lse in (("prefix_lse", prefix_lse), ("suffix_lse", suffix_lse)):
            _checks.tensor(name, lse, ("float32",))
            if not _checks.shape_matches(list(lse.shape), [heads, tokens]):
                raise ValueError(f"{name}: expected [heads, tokens] = [{heads}, {tokens}], got {list(lse.shape)}"
                                 + (" (that is [tokens, heads]: transpose it)"
                                    if list(lse.shape) == [tokens, heads] and tokens != heads else ""))
        if output_scale is not None:
            _checks.tensor("output_scale", output_scale, ("float32",))
            _checks.one_element("output_scale", output_scale)
        _checks.same_place(prefix_output=prefix_output, prefix_lse=prefix_lse, suffix_output=suffix_output,
                           suffix_lse=suffix_lse, output_scale=output_scale)
    if output_scale is not None:
        fp8 = _fp8_out_dtype()
        if out_dtype not in (None, fp8, "uint8", "float8_e4m3fn"):
            raise ValueError(f"out_dtype: with output_scale the output is fp8 ({fp8}), got {out_dtype!r}")
        if out_dtype == "float8_e4m3fn" and fp8 == "uint8":
            raise ValueError("out_dtype: this Paddle has no float8_e4m3fn; use 'uint8'")
        out_dtype = out_dtype or fp8
    else:
        _checks.choice("out_dtype", out_dtype, (None,) + FLOAT_DTYPES)
        out_dtype = out_dtype or _checks.dtype_name(prefix_output)
    out, lse = _run("merge_attn_states", prefix_output, prefix_lse, suffix_output, suffix_lse, output_scale,
                    out_dtype)
    return out, lse


@_graph_op
def quantize_fp8(x, scale):
    """Static-scale FP8 quantization: e4m3(clamp(x / scale, -448, 448)), round to nearest even,
    the division done once (x * (1 / scale) per element). NaN -> 0x7f.

    Args:
        x: any shape, bfloat16/float16/float32.
        scale: float32 tensor of one element on x's device (real value = e4m3 value * scale).

    Returns:
        float8_e4m3fn tensor of x's shape (uint8 bits on a Paddle without that dtype).
    """
    _checks.tensor("x", x, FLOAT_DTYPES, dense=False)
    _checks.tensor("scale", scale, ("float32",), dense=False)
    _checks.one_element("scale", scale)
    _checks.same_place(x=x, scale=scale)
    return ops_module().fastattn_quantize_fp8(x, scale, _fp8_out_dtype())


@_graph_op
def quant_mxfp4(x):
    """MXFP4 quantization (OCP microscaling FP4): blocks of 32 consecutive elements along the last
    axis share a power-of-two scale.

    Per block: e = ceil(log2(max(amax, 6 * 2^-126) / 6)) clamped to [-127, 127], scale byte
    e + 127 (ue8m0); each element becomes e2m1(x / 2^e), round to nearest even, saturating at
    +-6, sign kept on zero. NaN policy: a block holding NaN gets scale byte 0xff (the ue8m0 NaN)
    and zero codes, so it dequantizes to NaN. inf saturates to +-6 in a block of scale 2^127.

    Args:
        x: [..., D] bfloat16/float16/float32 with D % 32 == 0.

    Returns:
        (packed uint8 [..., D/2], low nibble = even element; scales uint8 [..., D/32]).
    """
    _checks.tensor("x", x, FLOAT_DTYPES, dense=False)
    if len(x.shape) == 0 or x.shape[-1] % 32 and x.shape[-1] >= 0:
        raise ValueError(f"x: the last dimension must be a multiple of 32, got shape {list(x.shape)}")
    _checks.gpu_alignment("x", x, 16)
    packed, scales = ops_module().fastattn_quant_mxfp4(x)
    return packed, scales


@_graph_op
def dequant_mxfp4(packed, scales, out_dtype="float32"):
    """Inverse of quant_mxfp4: e2m1 value * 2^(scale - 127), NaN for a block whose scale is 0xff.

    Args:
        packed: uint8 [..., D/2]; scales: uint8 [..., D/32] on the same device.
        out_dtype: "float32", "bfloat16" or "float16".

    Returns:
        [..., D] of out_dtype.
    """
    _checks.tensor("packed", packed, ("uint8",), dense=False)
    if len(packed.shape) == 0 or packed.shape[-1] % 16 and packed.shape[-1] >= 0:
        raise ValueError(f"packed: the last dimension must be a multiple of 16, got shape {list(packed.shape)}")
    _checks.tensor("scales", scales, ("uint8",), list(packed.shape[:-1]) + [packed.shape[-1] // 16], dense=False)
    _checks.choice("out_dtype", out_dtype, FLOAT_DTYPES)
    _checks.same_place(packed=packed, scales=scales)
    _checks.gpu_alignment("packed", packed, 4)
    return ops_module().fastattn_dequant_mxfp4(packed, scales, out_dtype)


def _self_check(op, device, stride, *attrs):
    """Runs self-check op `op` next to `device` over every `stride`-th input; returns its int64
    result: mismatch counts, then the smallest mismatching index of each (None where none)."""
    import numpy as np
    from .tensors import from_numpy

    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride: expected a positive int, got {stride!r}")
    anchor = from_numpy(np.zeros(1, np.float32), "float32", device)
    result = np.asarray(getattr(ops_module(), op)(anchor, stride, *attrs).numpy())
    counts, firsts = result[:len(result) // 2], result[len(result) // 2:]
    none = np.iinfo(np.int64).max
    return [int(x) for x in counts], [None if x == none else int(x) for x in firsts]


def check_e2m1_conversion(device="cpu", stride=1, input_dtype="float32"):
    """Self-check of the software e2m1 conversions that quant_mxfp4 uses where the GPU has no fp4
    instruction, against an independently written conversion.

    input_dtype "float32": the fp32 conversion on every `stride`-th float32 bit pattern (stride 1:
    all 2^32; seconds on a GPU, minutes on a CPU). "bfloat16" / "float16" (GPU only): the packed
    fp16 path of 16-bit inputs, on every bit pattern times every block multiplier 2^-e,
    e in [-127, 127]; a mismatch index is (e + 127) * 2^16 + pattern.

    Returns:
        (number of mismatches, smallest mismatching index or None).
    """
    if input_dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"input_dtype: expected float32, bfloat16 or float16, got {input_dtype!r}")
    if input_dtype != "float32" and device != "gpu":
        raise ValueError(f"input_dtype {input_dtype}: the 16-bit path is the GPU kernel's; check it on the gpu")
    (mismatches,), (first,) = _self_check("fastattn_check_e2m1", device, stride, input_dtype)
    return mismatches, first


def check_packed_conversions(stride=1):
    """Self-check on the GPU of the two-at-a-time conversions the CUDA kernels store with (bf16,
    fp16 and saturating e4m3 pairs, numerics.h `pack2`) against the one-element conversions that
    define the formats: every `stride`-th float32 bit pattern x, as the pair (x, -0.75x)
    (stride 1: all 2^32, a second or two).

    Returns:
        {"bfloat16": (mismatches, smallest mismatching pattern or None), "float16": ...,
         "float8_e4m3fn": ...}.
    """
    mismatches, first = _self_check("fastattn_check_packed_conversions", "gpu", stride)
    return dict(zip(("bfloat16", "float16", "float8_e4m3fn"), zip(mismatches, first)))


# ----------------------------------------------------------------------------------------------
# Attention.

ATTN_INPUT_DTYPES = _checks.HALF_DTYPES + _checks.BYTE_DTYPES


def _is_fp8(t):
    return _checks.dtype_name(t) in _checks.BYTE_DTYPES


def _check_descale(name, t, batch, kv_heads):
    if t is None:
        return
    _checks.tensor(name, t, ("float32",))
    if not any(_checks.shape_matches(list(t.shape), want) for want in ([1], [batch, kv_heads])):
        raise ValueError(f"{name}: expected shape [{batch}, {kv_heads}] or [1], got {list(t.shape)}")


def _attention_out_dtype(q, out_dtype):
    if out_dtype is None:
        return "bfloat16" if _is_fp8(q) else _checks.dtype_name(q)
    _checks.choice("out_dtype", out_dtype, FLOAT_DTYPES)
    return out_dtype


def _check_query(q, kv_name, kv_heads, cu_seqlens_q):
    """q's head layout against the kv heads, and cu_seqlens_q; returns the batch. (q itself is
    checked by the callers, before they read its shape.)"""
    _checks.choice("head_dim (q.shape[2])", q.shape[2], _checks.HEAD_DIMS)
    if kv_heads == 0:
        raise ValueError(f"{kv_name}: expected at least one kv head (shape[1]), got 0")
    if q.shape[1] == 0:
        raise ValueError("q: expected at least one query head (shape[1]), got 0")
    if kv_heads > 0 and q.shape[1] % kv_heads:
        raise ValueError(f"q: {q.shape[1]} query heads is not a multiple of {kv_heads} kv heads")
    _checks.tensor("cu_seqlens_q", cu_seqlens_q, ("int32",), [None])
    if cu_seqlens_q.shape[0] == 0:
        raise ValueError("cu_seqlens_q: expected [batch + 1] offsets, got an empty tensor")
    return _checks.plus(cu_seqlens_q.shape[0], -1)  # batch (-1: unknown until a static program runs)


def _check_num_splits(num_splits):
    return 0 if num_splits is None else _checks.int32("num_splits", num_splits, 1, "None or a positive int")


def _check_offsets(validate, check_inputs, q, cu_seqlens_q, k_offsets=None):
    """The attention ops' batch offsets on the host: always for CPU tensors (where that costs no
    sync) unless the checks are skipped, and wherever `validate` asks. k_offsets: (cu_seqlens_k,
    key rows) of flash_attn_varlen. Returns cu_seqlens_q as host ints, or None if unchecked."""
    if not (_checks.validation_enabled(validate, q) or (check_inputs and _checks.place_name(q) == "cpu")):
        return None
    cu = _checks.host(cu_seqlens_q)
    _checks.cu_seqlens("cu_seqlens_q", cu, q.shape[0], from_zero=True)
    if k_offsets is not None:
        _checks.cu_seqlens("cu_seqlens_k", _checks.host(k_offsets[0]), k_offsets[1])
    return cu


def _check_same_half(q, kv_name, kv):
    """A 16-bit q needs 16-bit k/v (or cache) of its own dtype; FP8/INT8 k/v go with either."""
    if not _is_fp8(q) and not _is_fp8(kv) and _checks.dtype_name(kv) != _checks.dtype_name(q):
        raise TypeError(f"{kv_name}: expected {_checks.dtype_name(q)} like q (or FP8), got {_checks.dtype_name(kv)}")


@_graph_op
def flash_attn_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale=None,
                      causal=False, q_descale=None, k_descale=None, v_descale=None, out_dtype=None,
                      num_splits=None, fp8_pv=False, validate=None, check_inputs=True):
    """Attention over packed variable-length sequences, with FP8 inputs.

    On the GPU, FP8 k/v (fp8_pv off) in a batch of 64 row tiles a sequence or more on average (a
    row tile: 128 query rows, 192 at head_dim 64, counted per q head; 2048 queries a sequence with
    4 q heads a kv head at head_dim 128) are widened to fp16 once per call rather than in every CTA
    of the sm_90a kernel: V with an FP8 q at head_dim 128 (4-7% faster on an H200), K and V with a
    bf16/fp16 q at every head_dim (11-14% at 128, 11-35% at 64 and 256), each into a temporary
    (Tk + 128 batch) x Hkv x D fp16 buffer, 2 GiB at most for both (else the kernel widens for
    itself). The results are the same. FASTATTN_WIDENED_KV=always / never overrides that choice,
    but not the 2 GiB (here and in paged_attention).

    Args:
        q: [Tq, Hq, D]; k, v: [Tk, Hkv, D], Hq a multiple of Hkv (grouped-query); D in 64/128/256.
            Each is bfloat16/float16 or FP8 e4m3fn (uint8 or float8_e4m3fn). FP8 q needs FP8 k/v.
        cu_seqlens_q, cu_seqlens_k: int32 [batch + 1] offsets of each sequence, non-decreasing,
            cu_seqlens_q from 0 (see the module docstring). Queries past cu_seqlens_q[batch]
            belong to no sequence: out 0, lse -inf.
        max_seqlen_q, max_seqlen_k: the longest sequence lengths (ints; not checked against the
            offsets: on the GPU they size the key splits).
        softmax_scale: default 1/sqrt(D).
        causal: bottom-right aligned: query i of a sequence with Lq queries and Lk keys sees keys
            j <= i + Lk - Lq.
        q_descale, k_descale, v_descale: float32 [batch, Hkv] or [1], for FP8 inputs only: the
            real value of an element is element * descale. Folded in fp32 (q and k into the softmax
            scale, v into the output).
        out_dtype: "bfloat16", "float16" or "float32"; default q's dtype (bf16 for FP8 q).
        num_splits: GPU only: split every sequence's keys into this many ranges computed by
            separate CTAs and merged afterwards; default: chosen from the shapes.
        fp8_pv: GPU only, opt-in speed for accuracy: where the sm_90a prefill kernel runs at
            head_dim 64 or 128 with an FP8 q, multiply the softmax weights P by V on the FP8 tensor
            cores, P rounded to e4m3: 1-9% faster there (H100; 2% at head_dim 64), and the output's
            relative error goes from about 3e-4 to 2-3% on random data. Weights down to 2^-10 of a
            row's largest stay in e4m3's normal range (within 2^-4 of themselves); keys whose scores
            are alike round alike, which can bias their share of the output by up to that much (4e-2
            measured, 32k keys 10 (base 2) below one). o is summed in fp32 every 1024 keys, so the
            error does not grow with the row. At head_dim 64, and over cache_fp8 at 128, the row
            sums, and so the log-sum-exp, are of P as rounded (within about 2^-4 of the exact
            log-sum-exp), which also cancels that bias. Other kernels and the CPU ignore it.
        validate: check the offsets on the host first, on any device (see the module docstring).
        check_inputs: False skips the Python checks (see the module docstring).

    Returns:
        (out [Tq, Hq, D], lse float32 [Hq, Tq], natural log). A query with no visible key (an
        empty key range, or causal with Lq > Lk) gets out 0 and lse -inf.
    """
    if check_inputs:
        _checks.tensor("q", q, ATTN_INPUT_DTYPES, [None, None, None])
        _checks.tensor("k", k, ATTN_INPUT_DTYPES, [None, None, q.shape[2]])
        batch = _check_query(q, "k", k.shape[1], cu_seqlens_q)
        _checks.tensor("v", v, (_checks.dtype_name(k),), list(k.shape))
        _check_rows_aligned(q=q, k=k, v=v)
        _checks.tensor("cu_seqlens_k", cu_seqlens_k, ("int32",), [_checks.plus(batch, 1)])
        if _is_fp8(q) and not _is_fp8(k):
            raise TypeError("q: an FP8 q needs FP8 k and v (FP8 q with bf16/fp16 k/v is not supported)")
        _check_same_half(q, "k", k)
        for name, t, x in (("q_descale", q_descale, q), ("k_descale", k_descale, k), ("v_descale", v_descale, v)):
            if t is not None and not _is_fp8(x):
                raise ValueError(f"{name}: only FP8 inputs take a descale, {name[0]} is {_checks.dtype_name(x)}")
            _check_descale(name, t, batch, k.shape[1])
        _checks.int32("max_seqlen_q", max_seqlen_q)
        _checks.int32("max_seqlen_k", max_seqlen_k)
        _checks.same_place(q=q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, q_descale=q_descale,
                           k_descale=k_descale, v_descale=v_descale)
    _check_offsets(validate, check_inputs, q, cu_seqlens_q, (cu_seqlens_k, k.shape[0]))
    splits = _check_num_splits(num_splits)
    scale = float(softmax_scale) if softmax_scale is not None else q.shape[2] ** -0.5
    out, lse = _run("flash_attn_varlen", q, k, v, cu_seqlens_q, cu_seqlens_k, q_descale, k_descale, v_descale,
                    scale, bool(causal), _attention_out_dtype(q, out_dtype), max_seqlen_k, splits, bool(fp8_pv))
    return out, lse


@_graph_op
def paged_attention(q, key_cache, value_cache, block_tables, seq_lens_kv, cu_seqlens_q, cache_quant_type="none",
                    k_dequant_scale=None, v_dequant_scale=None, k_scale_cache=None, v_scale_cache=None,
                    softmax_scale=None, causal=True, q_descale=None, kv_end=None, out_dtype=None, num_splits=None,
                    fp8_pv=False, max_seqlen_kv=None, max_multi_token_seqs=None, validate=None, check_inputs=True):
    """Attention that reads a paged KV cache as write_cache_kv left it (decode and chunked prefill).

    Args:
        q: [Tq, Hq, D] bfloat16/float16 (or FP8 with q_descale), packed by cu_seqlens_q.
        key_cache, value_cache: a layer's cache [num_blocks, Hkv, block_size, D].
        block_tables: int32 [batch, max_blocks_per_seq].
        seq_lens_kv: int32 [batch]: keys of each sequence in the cache, this step's included; the
            sequence's queries are its last positions.
        cu_seqlens_q: int32 [batch + 1], non-decreasing from 0 (see the module docstring);
            queries past cu_seqlens_q[batch] belong to no sequence: out 0, lse -inf.
        cache_quant_type, k_dequant_scale, v_dequant_scale, k_scale_cache, v_scale_cache: as for
            append_cache_kv_c8.
        softmax_scale: default 1/sqrt(D). causal: bottom-right aligned (default True).
        q_descale: float32 [batch, Hkv] or [1], for FP8 q.
        kv_end: optional int32 [Tq]: query i sees only keys j < kv_end[i], on top of causality
            (flash-mask style limits; 0 gives a row with no visible key).
        out_dtype, num_splits, fp8_pv: as for flash_attn_varlen (fp8_pv: an FP8 q over a
            cache_fp8 or block_wise_fp8 cache).
        max_seqlen_kv: optional host int, at least every queried sequence's seq_lens_kv (checked
            with validate; where it applies, the output rows of a sequence longer than it rounded
            up to 8 come out NaN, with a bf16/fp16 q its lse too). With it, the sm_90a prefill
            kernel (fp8_pv off) takes V (FP8 q at head_dim 128, over block_wise_fp8) or K and V (a
            bf16/fp16 q over cache_fp8 or block_wise_fp8, every head_dim) widened to fp16 once per
            call, rather than in every CTA, where the batch averages 64 row tiles a sequence or
            more (as flash_attn_varlen; FASTATTN_WIDENED_KV overrides): the same results, faster.
            A bf16/fp16 q over block_wise_fp8 at head_dim 256 runs on the sm_90a kernel only so,
            and is widened from 1 row tile a sequence (1.4-3.3x faster than on its mma.sync
            kernel, on an H200). Each buffer, batch x (max_seqlen_kv + 135 at most) x Hkv x D
            fp16, gives every sequence the longest one's rows (each sequence's keys, up to its last
            tile, are written); where the two would pass 2 GiB (many sequences under a long bound)
            the kernel widens for itself, and a bf16/fp16 q over block_wise_fp8 at head_dim 256
            runs on mma.sync. Elsewhere it changes nothing.
        max_multi_token_seqs: optional host int, at least the number of sequences with two queries
            or more (checked with validate). With max_seqlen_kv, in a batch of several sequences at
            a GQA group of 16 or less, where the sequences of one query run on the decode kernel
            (which reads the cache itself): the buffers hold rows for that many sequences rather
            than the batch (plus one more sequence's, NaN, where it is below the batch), and the
            row tiles are averaged over them. A server's step of decodes beside a chunk of a
            prompt then widens the chunk's keys alone. Where more of the prefill kernel's
            sequences than it says come, in batch order, those past its count give NaN rows as
            above.
        validate: check the offsets, seq_lens_kv and the block tables over each queried
            sequence's keys on the host first (see the module docstring).
        check_inputs: False skips the Python checks (see the module docstring).

    Returns:
        (out [Tq, Hq, D], lse float32 [Hq, Tq]); rows with no visible key give 0 and -inf.
    """
    if check_inputs:
        _checks.tensor("q", q, ATTN_INPUT_DTYPES, [None, None, None])
        if _is_fp8(q) and cache_quant_type == "none":
            raise TypeError("q: an FP8 q needs an FP8/INT8 cache (FP8 q with a bf16/fp16 cache is not supported)")
        num_blocks, heads, block_size, head_dim = _check_cache_pair(
            key_cache, value_cache, cache_quant_type, "q", q, ATTN_INPUT_DTYPES, grouped_heads=True)
        batch = _check_query(q, "key_cache", heads, cu_seqlens_q)
        _checks.tensor("block_tables", block_tables, ("int32",), [batch, None])
        _checks.tensor("seq_lens_kv", seq_lens_kv, ("int32",), [batch])
        _check_scales(cache_quant_type, heads, [num_blocks, heads, block_size],
                      ("k_dequant_scale", "v_dequant_scale"), (k_dequant_scale, v_dequant_scale),
                      ("k_scale_cache", "v_scale_cache"), (k_scale_cache, v_scale_cache))
        if q_descale is not None and not _is_fp8(q):
            raise ValueError(f"q_descale: only an FP8 q takes a descale, q is {_checks.dtype_name(q)}")
        _check_descale("q_descale", q_descale, batch, heads)
        if kv_end is not None:
            _checks.tensor("kv_end", kv_end, ("int32",), [q.shape[0]])
        _checks.same_place(q=q, key_cache=key_cache, value_cache=value_cache, block_tables=block_tables,
                           seq_lens_kv=seq_lens_kv, cu_seqlens_q=cu_seqlens_q, k_dequant_scale=k_dequant_scale,
                           v_dequant_scale=v_dequant_scale, k_scale_cache=k_scale_cache, v_scale_cache=v_scale_cache,
                           q_descale=q_descale, kv_end=kv_end)
    cu = _check_offsets(validate, check_inputs, q, cu_seqlens_q)
    value_keys = 0 if max_seqlen_kv is None else _checks.int32("max_seqlen_kv", max_seqlen_kv, 1, "None or a positive int")
    multi_token = -1 if max_multi_token_seqs is None else _checks.int32(
        "max_multi_token_seqs", max_multi_token_seqs, 0, "None or a non-negative int")
    if _checks.validation_enabled(validate, q):
        queried, keys = np.diff(cu) > 0, _checks.host(seq_lens_kv)
        _checks.non_negative("seq_lens_kv", np.where(queried, keys, 0))
        spans = {b: (0, int(keys[b])) for b in np.flatnonzero(queried)}
        if value_keys and queried.any() and int(keys[queried].max()) > value_keys:
            raise ValueError(f"max_seqlen_kv: {value_keys} is below a queried sequence's seq_lens_kv "
                             f"({int(keys[queried].max())})")
        multi_token_seqs = int(np.count_nonzero(np.diff(cu) > 1))
        if 0 <= multi_token < multi_token_seqs:
            raise ValueError(f"max_multi_token_seqs: {multi_token} is below the batch's {multi_token_seqs} "
                             "sequences of two queries or more")
        _checks.block_table_entries(block_tables, key_cache.shape[0], key_cache.shape[2], spans)
    splits = _check_num_splits(num_splits)
    scale = float(softmax_scale) if softmax_scale is not None else key_cache.shape[3] ** -0.5
    scale_k = k_scale_cache if cache_quant_type == "block_wise_fp8" else k_dequant_scale
    scale_v = v_scale_cache if cache_quant_type == "block_wise_fp8" else v_dequant_scale
    out, lse = _run("paged_attention", q, key_cache, value_cache, block_tables, seq_lens_kv, cu_seqlens_q, scale_k,
                    scale_v, q_descale, kv_end, cache_quant_type, scale, bool(causal),
                    _attention_out_dtype(q, out_dtype), splits, bool(fp8_pv), value_keys, multi_token)
    return out, lse
