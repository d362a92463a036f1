"""ForwardMeta: one step's batch, built once per step on the host and shared by every layer."""
from dataclasses import dataclass, field
from typing import Any, List, Optional

import numpy as np

from .. import _checks
from ..tensors import from_numpy


def _offsets(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


@dataclass
class ForwardMeta:
    """What every layer's attention needs to know about this step's batch.

    A server builds it once per step with `ForwardMeta.build` from the host-side lengths it
    already holds; all data-dependent host work (token counts, the prefill/decode split, key
    offsets, block-table checks) happens there, so a layer's `forward_mixed` only launches ops.

    Batch slots: sequence b owns rows cu_seqlens_q[b] .. cu_seqlens_q[b+1] - 1 of this step's
    q/k/v. seq_lens_decoder[b] tokens of it are already in the cache, seq_lens_this_time[b] new
    tokens follow them (0: an idle slot, nothing read or written). seq_lens_encoder[b] is
    seq_lens_this_time[b] for a sequence in its prompt phase (a fresh prefill, or a chunk after a
    cached prefix) and 0 for a decode.

    Device tensors (int32, on the caches' device):
        block_tables [batch, max_blocks_per_seq]; seq_lens_encoder, seq_lens_decoder,
        seq_lens_this_time [batch]; cu_seqlens_q [batch + 1];
        seq_lens_kv [batch]: all keys each sequence attends over, seq_lens_decoder + this step's;
        prefill_seq_lens_kv [batch]: seq_lens_kv of prompt-phase sequences, 0 elsewhere;
        cu_seqlens_k [batch + 1]: offsets of prefill_seq_lens_kv, i.e. where each prompt-phase
            sequence's keys (cached prefix, then this step's) sit in a gathered key buffer;
        decode_seq_lens_kv [batch]: seq_lens_kv of decoding sequences, 0 elsewhere;
        kv_end [num_tokens] or None: flash-mask key limits, query i sees keys j < kv_end[i].
    Host values: num_tokens, max_seqlen_q, max_seqlen_kv, num_prefill_keys (rows of the gathered
        key buffer), max_prefill_seqlen_kv, multi_token_seqs (sequences with two new tokens or
        more), has_prefill, has_decode.
    """
    caches: List[Any]
    block_tables: Any
    seq_lens_encoder: Any
    seq_lens_decoder: Any
    seq_lens_this_time: Any
    cu_seqlens_q: Any
    seq_lens_kv: Any
    prefill_seq_lens_kv: Any
    cu_seqlens_k: Any
    decode_seq_lens_kv: Any
    num_tokens: int
    max_seqlen_q: int
    max_seqlen_kv: int
    num_prefill_keys: int
    max_prefill_seqlen_kv: int
    multi_token_seqs: int
    has_prefill: bool
    has_decode: bool
    kv_end: Optional[Any] = None
    # Gathered key/value buffers, allocated by the first layer that needs them and reused by the
    # rest (every layer overwrites every row it reads): {(heads, head_dim, dtype): (k, v)}.
    _gather_buffers: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, caches, block_tables, seq_lens_encoder, seq_lens_decoder, seq_lens_this_time,
              kv_end=None):
        """Checks one step's host-side batch description and puts it on the caches' device.

        Args:
            caches: the server's flat list of every layer's cache tensors (fastattn.cache).
            block_tables: int [batch, max_blocks_per_seq] numpy array; -1 for unused entries.
            seq_lens_encoder, seq_lens_decoder, seq_lens_this_time: int [batch] numpy arrays
                (see the class docstring).
            kv_end: optional int [num_tokens] numpy array of flash-mask key limits.

        Raises ValueError for inconsistent lengths or a block table that does not map every
        position a sequence reads or writes this step to a block of the cache.
        """
        if not caches:
            raise ValueError("caches: expected the server's list of cache tensors, got an empty list")
        tables = np.asarray(block_tables)
        if tables.ndim != 2:
            raise ValueError(f"block_tables: expected [batch, max_blocks_per_seq], got shape {list(tables.shape)}")
        batch = tables.shape[0]
        lens = {}
        for name, values in (("seq_lens_encoder", seq_lens_encoder), ("seq_lens_decoder", seq_lens_decoder),
                             ("seq_lens_this_time", seq_lens_this_time)):
            values = np.asarray(values)
            if values.shape != (batch,):
                raise ValueError(f"{name}: expected shape [{batch}] (one per block-table row), "
                                 f"got {list(values.shape)}")
            if (values < 0).any():
                raise ValueError(f"{name}: lengths must be non-negative, got {values.tolist()}")
            lens[name] = values.astype(np.int32)
        encoder, cached, new = lens["seq_lens_encoder"], lens["seq_lens_decoder"], lens["seq_lens_this_time"]
        bad = np.flatnonzero((encoder != 0) & (encoder != new))
        if bad.size:
            b = int(bad[0])
            raise ValueError(f"seq_lens_encoder[{b}] = {encoder[b]}: a prompt-phase sequence's new tokens are all "
                             f"prompt tokens, so it must be 0 or seq_lens_this_time[{b}] = {new[b]}")
        seq_lens_kv = cached + new
        _check_block_tables(tables, seq_lens_kv, new > 0, caches[0])

        prefill = encoder > 0
        decode = (new > 0) & ~prefill
        prefill_kv = np.where(prefill, seq_lens_kv, 0).astype(np.int32)
        num_tokens = int(new.sum())
        if kv_end is not None:
            kv_end = np.asarray(kv_end)
            if kv_end.shape != (num_tokens,):
                raise ValueError(f"kv_end: expected shape [{num_tokens}] (one per token of this step), "
                                 f"got {list(kv_end.shape)}")
        place = _checks.place_name(caches[0])

        def device(values):
            return from_numpy(np.asarray(values, np.int32), "int32", place)

        return cls(
            caches=caches, block_tables=device(tables), seq_lens_encoder=device(encoder),
            seq_lens_decoder=device(cached), seq_lens_this_time=device(new), cu_seqlens_q=device(_offsets(new)),
            seq_lens_kv=device(seq_lens_kv), prefill_seq_lens_kv=device(prefill_kv),
            cu_seqlens_k=device(_offsets(prefill_kv)),
            decode_seq_lens_kv=device(np.where(decode, seq_lens_kv, 0)),
            num_tokens=num_tokens, max_seqlen_q=int(new.max(initial=0)),
            max_seqlen_kv=int(np.where(new > 0, seq_lens_kv, 0).max(initial=0)),
            num_prefill_keys=int(prefill_kv.sum()), max_prefill_seqlen_kv=int(prefill_kv.max(initial=0)),
            multi_token_seqs=int(np.count_nonzero(new > 1)),
            has_prefill=bool(prefill.any()), has_decode=bool(decode.any()),
            kv_end=None if kv_end is None else device(kv_end))

    def gather_buffers(self, heads, head_dim, dtype):
        """Key and value buffers [num_prefill_keys, heads, head_dim] of `dtype` for gathering the
        prompt-phase sequences' keys; allocated once per step, shared by all layers."""
        key = (heads, head_dim, dtype)
        if key not in self._gather_buffers:
            place = _checks.place_name(self.caches[0])
            shape = (self.num_prefill_keys, heads, head_dim)
            self._gather_buffers[key] = tuple(from_numpy(np.zeros(shape, np.uint16), dtype, place)
                                              for _ in range(2))
        return self._gather_buffers[key]


def _check_block_tables(tables, seq_lens_kv, active, some_cache):
    """Every position an active sequence reads or writes must map to a block of the cache: the
    ops skip unmapped positions silently (they cannot raise without a host sync), so a server's
    bookkeeping error would otherwise show up only as wrong attention."""
    num_blocks, block_size = some_cache.shape[0], some_cache.shape[2]
    for b in np.flatnonzero(active):
        needed = -(-int(seq_lens_kv[b]) // block_size)
        if needed > tables.shape[1]:
            raise ValueError(f"block_tables: sequence {b} holds {seq_lens_kv[b]} tokens after this step, "
                             f"{needed} blocks of {block_size}, but the table has {tables.shape[1]} columns")
        entries = tables[b, :needed]
        outside = np.flatnonzero((entries < 0) | (entries >= num_blocks))
        if outside.size:
            j = int(outside[0])
            raise ValueError(f"block_tables[{b}, {j}] = {entries[j]} is outside [0, {num_blocks}) but sequence "
                             f"{b} uses positions {j * block_size}..{min((j + 1) * block_size, seq_lens_kv[b]) - 1}")
