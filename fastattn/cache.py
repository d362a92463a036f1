"""The quantized paged KV cache as a server holds it.

Vocabulary (strings, as servers pass them):
  none            bf16/fp16 cache, the model's dtype
  cache_int8      int8, one static scale per kv head
  cache_fp8       e4m3fn, one static scale per kv head
  block_wise_fp8  e4m3fn, one dynamic scale per (block, head, slot), kept in scale tables

A server keeps every layer's cache tensors in one flat list: block_wise_fp8 uses 4 per layer,
caches[4L .. 4L+3] = [key, value, key scales, value scales]; every other type uses 2,
caches[2L], caches[2L+1], and its static scales live on the layer object as cache_k_scale /
cache_v_scale (quant multipliers, bound/absmax) and cache_k_out_scale / cache_v_out_scale
(dequant multipliers, their inverses).
"""
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from . import _checks
from .tensors import from_numpy

QUANT_TYPES = ("none", "cache_int8", "cache_fp8", "block_wise_fp8")
QUANT_BOUND = {"cache_int8": 127.0, "cache_fp8": 448.0, "block_wise_fp8": 448.0}


def tensors_per_layer(cache_quant_type):
    _checks.choice("cache_quant_type", cache_quant_type, QUANT_TYPES)
    return 4 if cache_quant_type == "block_wise_fp8" else 2


def is_quantized(cache_quant_type):
    _checks.choice("cache_quant_type", cache_quant_type, QUANT_TYPES)
    return cache_quant_type != "none"


def cache_bytes_per_token(kv_num_heads, head_dim, cache_quant_type, dtype="bfloat16"):
    """Bytes one token occupies in one layer's cache (K and V, scales included)."""
    element = 1 if is_quantized(cache_quant_type) else 2
    scales = 4 if cache_quant_type == "block_wise_fp8" else 0
    return 2 * kv_num_heads * (head_dim * element + scales)


def static_scales(absmax, cache_quant_type):
    """Per-head (quant multiplier, dequant multiplier) float32 arrays for a static type, from the
    per-head absolute maximum the cache must hold."""
    if cache_quant_type not in ("cache_int8", "cache_fp8"):
        raise ValueError(f"cache_quant_type: static scales exist for cache_int8 and cache_fp8, "
                         f"got {cache_quant_type!r}")
    absmax = np.maximum(np.asarray(absmax, np.float32), np.float32(1e-12))
    quant = (np.float32(QUANT_BOUND[cache_quant_type]) / absmax).astype(np.float32)
    return quant, (np.float32(1.0) / quant).astype(np.float32)


def set_static_scales(layer, absmax, place=None):
    """Gives `layer` the static scales layer_caches reads for its cache_quant_type_str (cache_int8
    or cache_fp8): cache_k_scale, cache_v_scale (quant multipliers) and cache_k_out_scale,
    cache_v_out_scale (dequant multipliers), float32 [kv_heads] tensors on `place` ("cpu" default,
    or "gpu"). absmax [2, kv_heads]: the per-head absolute maxima of K and of V. Returns the numpy
    (quant, dequant) arrays, each [2, kv_heads]."""
    absmax = np.asarray(absmax, np.float32)
    if absmax.ndim != 2 or absmax.shape[0] != 2:
        raise ValueError(f"absmax: expected [2, kv_heads] (K's and V's per-head maxima), got shape {list(absmax.shape)}")
    quant, dequant = static_scales(absmax, getattr(layer, "cache_quant_type_str", None))
    layer.cache_k_scale, layer.cache_v_scale = (from_numpy(x, "float32", place) for x in quant)
    layer.cache_k_out_scale, layer.cache_v_out_scale = (from_numpy(x, "float32", place) for x in dequant)
    return quant, dequant


def allocate_kv_caches(num_layers, num_blocks, kv_num_heads, block_size, head_dim,
                       cache_quant_type, dtype="bfloat16", place=None):
    """Zero-filled caches for `num_layers` layers as the server's flat list.

    Each key/value tensor is [num_blocks, kv_num_heads, block_size, head_dim]: `dtype` for
    "none", uint8 (e4m3fn or int8 bits) otherwise. block_wise_fp8 adds float32 scale tables
    [num_blocks, kv_num_heads, block_size] after each layer's key and value. `place`: "cpu"
    (default) or "gpu".
    """
    per_layer = tensors_per_layer(cache_quant_type)
    _checks.choice("dtype", dtype, _checks.HALF_DTYPES)
    _checks.choice("head_dim", head_dim, _checks.HEAD_DIMS)
    _checks.choice("block_size", block_size, _checks.BLOCK_SIZES)
    for name, value in (("num_layers", num_layers), ("num_blocks", num_blocks),
                        ("kv_num_heads", kv_num_heads)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    shape = (num_blocks, kv_num_heads, block_size, head_dim)
    caches = []
    for _ in range(num_layers):
        if cache_quant_type == "none":
            pair = [from_numpy(np.zeros(shape, np.uint16), dtype, place) for _ in range(2)]
        else:
            pair = [from_numpy(np.zeros(shape, np.uint8), "uint8", place) for _ in range(2)]
        caches += pair
        if per_layer == 4:
            caches += [from_numpy(np.zeros(shape[:3], np.float32), "float32", place) for _ in range(2)]
    return caches


@dataclass
class LayerCaches:
    """One layer's cache tensors and scales, as the ops take them."""
    cache_quant_type: str
    key_cache: Any
    value_cache: Any
    k_scale_cache: Optional[Any] = None  # block_wise_fp8
    v_scale_cache: Optional[Any] = None
    k_quant_scale: Optional[Any] = None  # cache_int8 / cache_fp8
    v_quant_scale: Optional[Any] = None
    k_dequant_scale: Optional[Any] = None
    v_dequant_scale: Optional[Any] = None

    def write_args(self):
        """Keyword arguments of fastattn.ops.write_cache_kv for this layer."""
        return dict(cache_quant_type=self.cache_quant_type, k_quant_scale=self.k_quant_scale,
                    v_quant_scale=self.v_quant_scale, k_scale_cache=self.k_scale_cache,
                    v_scale_cache=self.v_scale_cache)

    def read_args(self):
        """Keyword arguments of the cache readers (append_cache_kv_c8, paged attention)."""
        return dict(cache_quant_type=self.cache_quant_type, k_dequant_scale=self.k_dequant_scale,
                    v_dequant_scale=self.v_dequant_scale, k_scale_cache=self.k_scale_cache,
                    v_scale_cache=self.v_scale_cache)


def layer_caches(caches, layer):
    """Picks layer `layer.layer_id`'s tensors out of the flat `caches` list by the index rule
    of `layer.cache_quant_type_str`; static scales come from the layer's cache_k_scale,
    cache_v_scale, cache_k_out_scale and cache_v_out_scale attributes."""
    quant = getattr(layer, "cache_quant_type_str", None)
    layer_id = getattr(layer, "layer_id", None)
    _checks.choice("layer.cache_quant_type_str", quant, QUANT_TYPES)
    per_layer = tensors_per_layer(quant)
    if not isinstance(layer_id, int) or layer_id < 0:
        raise ValueError(f"layer.layer_id: expected a non-negative int, got {layer_id!r}")
    if len(caches) % per_layer or per_layer * (layer_id + 1) > len(caches):
        raise ValueError(
            f"caches: {quant} keeps {per_layer} tensors per layer, so layer {layer_id} needs "
            f"caches[{per_layer * layer_id}:{per_layer * (layer_id + 1)}], but the list has "
            f"{len(caches)} tensors")
    own = caches[per_layer * layer_id: per_layer * (layer_id + 1)]
    result = LayerCaches(quant, own[0], own[1])
    if per_layer == 4:
        for name, t in zip(("caches[4L+2] (key scales)", "caches[4L+3] (value scales)"), own[2:]):
            _checks.tensor(name, t, _checks.SCALE_DTYPES, [t.shape[0], None, None])
        result.k_scale_cache, result.v_scale_cache = own[2], own[3]
    elif quant != "none":
        for attr in ("cache_k_scale", "cache_v_scale", "cache_k_out_scale", "cache_v_out_scale"):
            if getattr(layer, attr, None) is None:
                raise ValueError(f"layer.{attr}: {quant} needs the layer's static scales")
        result.k_quant_scale, result.v_quant_scale = layer.cache_k_scale, layer.cache_v_scale
        result.k_dequant_scale = layer.cache_k_out_scale
        result.v_dequant_scale = layer.cache_v_out_scale
    return result
