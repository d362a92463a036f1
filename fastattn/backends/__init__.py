"""Attention backends a server calls once per layer: ForwardMeta.build once per step, then
backend.forward_mixed(q, k, v, layer, forward_meta) for every layer."""
from .base import AttentionBackend
from .flash_attn import FlashAttentionBackend
from .flash_mask_attn import FlashMaskAttentionBackend
from .forward_meta import ForwardMeta

__all__ = ["AttentionBackend", "FlashAttentionBackend", "FlashMaskAttentionBackend", "ForwardMeta"]
