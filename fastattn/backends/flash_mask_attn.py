"""FlashMaskAttentionBackend: causal attention with per-query key limits (flash-mask style)."""
from .base import AttentionBackend


class FlashMaskAttentionBackend(AttentionBackend):
    """Like FlashAttentionBackend, plus ForwardMeta.kv_end: query i of this step sees only keys
    j < kv_end[i] of its sequence (positions counted from the sequence's first token), on top of
    causality; None means no limits. A query left with no visible key (kv_end 0, say) gets zeros.

    Structure: one paged_attention call over the whole batch, which takes kv_end directly.
    flash_attn_varlen takes no per-query limits, so the gather structure is not offered here.
    """

    honors_kv_end = True

    def attend(self, q, caches, softmax_scale, forward_meta):
        out, _ = self.paged(q, caches, softmax_scale, forward_meta, forward_meta.seq_lens_kv, forward_meta.kv_end)
        return out
