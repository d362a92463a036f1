"""FlashAttentionBackend: causal attention over prefix + new tokens for a mixed batch."""
from .. import _checks, ops
from .base import AttentionBackend

PREFILL_PATHS = ("paged", "gather")


class FlashAttentionBackend(AttentionBackend):
    """Causal attention of a mixed prefill/decode batch over a quantized paged cache.

    Two structures compute the same thing (every key read as the cache stores it); `prefill_path`
    picks how prompt-phase sequences are attended. Decodes always go through paged attention.

    "paged" (the default): one paged_attention call over the whole batch. It handles decode
        (one query per sequence) and chunked prefill (many queries, prefix in the cache, causal
        bottom-right) for every quant type, so the whole layer is write + one attention launch.
        It reads each key as the cache stores it: 1 byte per element for the quantized types.
    "gather": the prompt-phase sequences' keys (cached prefix and this step's, positions
        0 .. seq_lens_kv - 1) are dequantized by append_cache_kv_c8 into a bf16/fp16 buffer laid
        out by ForwardMeta.cu_seqlens_k, and flash_attn_varlen runs causally over it; decode rows
        get no keys there. A second, paged_attention call gives the decode rows (prompt-phase
        rows get no keys there), and merge_attn_states combines the two by their LSEs: each row
        has keys on exactly one side, so the merge just takes that side, and it writes both
        halves into one output without any Paddle tensor op. A step without decodes skips the
        paged call and the merge; a step without prefills is the "paged" structure.

    Why "paged" is the default: it moves fewer bytes and launches fewer kernels. The gather reads
    the quantized prefix, writes it back at 2 bytes per element and flash_attn_varlen reads that
    again (5 bytes per element where paged reads 1), plus two extra launches and a buffer whose
    size depends on the batch. "gather" pays off only if the varlen kernel's prefill throughput
    beats the paged kernel's by more than that traffic: a trade to measure on the GPU (the demo's
    --prefill-path flag runs either). On the CPU kernels "paged" is 2-5% faster (4 x 200
    new tokens after 300 cached, and 2 prefills of 256 with 30 decodes over 700 keys; 8 q / 2 kv
    heads, head_dim 128): there the attention loops dominate and the gather is the difference.

    Not offered: splitting each prompt-phase sequence into a cached-prefix part (non-causal) and a
    new-token part (causal over this step's unquantized K/V) merged by LSE. It would attend over
    this step's keys at full precision but over earlier chunks' keys quantized, so outputs would
    depend on chunking and prefix-cache hits; and with the new keys read from the cache it would
    need a gather of positions seq_lens_decoder.. onwards, which append_cache_kv_c8 does not do
    (it always starts at position 0), for no saving over one causal pass.
    """

    def __init__(self, prefill_path="paged"):
        _checks.choice("prefill_path", prefill_path, PREFILL_PATHS)
        self.prefill_path = prefill_path

    def attend(self, q, caches, softmax_scale, forward_meta):
        meta = forward_meta
        if self.prefill_path == "paged" or not meta.has_prefill:
            out, _ = self.paged(q, caches, softmax_scale, meta, meta.seq_lens_kv)
            return out
        k_rows, v_rows = meta.gather_buffers(caches.key_cache.shape[1], q.shape[2], _checks.dtype_name(q))
        ops.append_cache_kv_c8(caches.key_cache, caches.value_cache, k_rows, v_rows, meta.block_tables,
                               meta.prefill_seq_lens_kv, meta.prefill_seq_lens_kv, meta.cu_seqlens_k,
                               check_inputs=False, **caches.read_args())
        out, lse = ops.flash_attn_varlen(q, k_rows, v_rows, meta.cu_seqlens_q, meta.cu_seqlens_k, meta.max_seqlen_q,
                                         meta.max_prefill_seqlen_kv, softmax_scale=softmax_scale, causal=True,
                                         check_inputs=False)
        if not meta.has_decode:
            return out
        decode_out, decode_lse = self.paged(q, caches, softmax_scale, meta, meta.decode_seq_lens_kv, widened=False)
        out, _ = ops.merge_attn_states(decode_out, decode_lse, out, lse, check_inputs=False)
        return out
