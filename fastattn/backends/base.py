"""AttentionBackend: the per-layer entry point a server's layer loop calls."""
from .. import _checks, ops
from ..cache import layer_caches


class AttentionBackend:
    """Writes this step's K/V into a layer's cache, then attends over each sequence's cached
    prefix and new tokens; subclasses choose how (`attend`).

    Semantics shared by every backend: each query attends causally (bottom-right aligned) over all
    keys of its sequence as the cache stores them, this step's keys included. So a token's
    attention does not depend on how the scheduler chunked its prompt or whether its prefix came
    from the prefix cache, and the prefill of a token reads exactly what a later decode reads.

    Per layer, `forward_mixed` only checks shapes on the host and launches ops: no device-to-host
    copy and no decision that depends on tensor contents (those were made once per step in
    ForwardMeta.build), so the decode path can be captured in a CUDA graph.
    """

    # Whether this backend applies ForwardMeta.kv_end (flash-mask key limits).
    honors_kv_end = False

    def forward_mixed(self, q, k, v, layer, forward_meta):
        """Attention of one layer for a batch mixing prefills, prefix-cache hits, decodes and idle slots.

        Args:
            q: [num_tokens, Hq, D] bfloat16/float16, this step's queries packed by cu_seqlens_q.
            k, v: [num_tokens, Hkv, D] of q's dtype, this step's keys and values; Hq % Hkv == 0.
            layer: carries layer_id, cache_quant_type_str and, for cache_int8/cache_fp8, the static
                scales cache_k_scale, cache_v_scale, cache_k_out_scale, cache_v_out_scale
                (fastattn.cache.layer_caches); optionally softmax_scale (default 1/sqrt(D)).
            forward_meta: this step's ForwardMeta.

        Returns:
            [num_tokens, Hq * D] in q's dtype.
        """
        if forward_meta.kv_end is not None and not self.honors_kv_end:
            raise ValueError(f"forward_meta.kv_end: {type(self).__name__} does not apply flash-mask key limits; "
                             "use FlashMaskAttentionBackend")
        tokens = forward_meta.num_tokens
        _checks.tensor("q", q, _checks.HALF_DTYPES, [tokens, None, None])
        _checks.tensor("k", k, (_checks.dtype_name(q),), [tokens, None, q.shape[2]])
        _checks.tensor("v", v, (_checks.dtype_name(q),), list(k.shape))
        if q.shape[1] % k.shape[1]:
            raise ValueError(f"q: {q.shape[1]} query heads is not a multiple of k's {k.shape[1]} heads")
        caches = layer_caches(forward_meta.caches, layer)
        # The ops skip their own Python checks (about 150 us of host time each, every layer): q/k/v
        # were checked above, the batch tensors by ForwardMeta.build, the caches by their
        # allocation; the C++ ops still check shapes and dtypes.
        ops.write_cache_kv(k, v, caches.key_cache, caches.value_cache, forward_meta.block_tables,
                           forward_meta.cu_seqlens_q, forward_meta.seq_lens_decoder, check_inputs=False,
                           **caches.write_args())
        out = self.attend(q, caches, getattr(layer, "softmax_scale", None), forward_meta)
        # A view in Paddle 3; in Paddle 2.6 at most a device-to-device copy, never a compute kernel.
        return out.reshape([tokens, q.shape[1] * q.shape[2]])

    def attend(self, q, caches, softmax_scale, forward_meta):
        """[num_tokens, Hq, D] attention of q over the layer's cache (this step's K/V written)."""
        raise NotImplementedError

    @staticmethod
    def paged(q, caches, softmax_scale, forward_meta, seq_lens_kv, kv_end=None, widened=True):
        """paged_attention of q over `seq_lens_kv` keys per sequence (none above the step's
        max_seqlen_kv where a sequence has queries); returns (out, lse).

        With `widened`, the step's max_seqlen_kv and count of sequences with two new tokens or
        more size the K / V buffers the sm_90a prefill kernel may take widened once per call:
        beside decodes (a long cache read by one query row, on the decode kernel at GQA groups of
        16 or less) only the chunks' keys are widened. A call that reads no prompt-phase keys
        gains nothing from them."""
        bounds = dict(max_seqlen_kv=forward_meta.max_seqlen_kv or None,
                      max_multi_token_seqs=forward_meta.multi_token_seqs) if widened else {}
        return ops.paged_attention(q, caches.key_cache, caches.value_cache, forward_meta.block_tables, seq_lens_kv,
                                   forward_meta.cu_seqlens_q, softmax_scale=softmax_scale, kv_end=kv_end,
                                   check_inputs=False, **bounds, **caches.read_args())
