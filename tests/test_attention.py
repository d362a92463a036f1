"""flash_attn_varlen and paged_attention against the float64 references, on the CPU and the GPU."""
import collections
import functools
import itertools
import os
import unittest
from unittest import mock

import numpy as np

from util import PagedBatch, cu_seqlens, float_values, places, rel_err, seeded_rng, sm90_gpu, to_numpy
from util import from_numpy as host_from_numpy
from fastattn import cache, ops
from fastattn import reference as ref

# ||out - ref|| / ||ref||: fp32 accumulation is ~1e-6; the output rounding dominates (bf16 keeps
# 8 significant bits: ~2e-3 rms; fp16 11: ~3e-4).
BOUNDS = {"bfloat16": 6e-3, "float16": 1e-3, "float32": 2e-5}
# The GPU kernel also rounds the softmax weights P to the tensor cores' 16-bit type: bf16 where q
# and k/v are bf16, fp16 otherwise. A relative rounding error of rms 2^-9/sqrt(3) (bf16) or
# 2^-12/sqrt(3) (fp16) per weight moves the output by about that much relative to its norm;
# the bounds allow 3.5x. With fp8_pv the sm_90a kernel at head_dim 64 and 128 with FP8 q rounds P to e4m3
# (4 significant bits: rms 2^-4/sqrt(3)).
P_BOUNDS = {"bfloat16": 4e-3, "float16": 5e-4, "e4m3": 0.13}
LSE_TOL = {"cpu": 1e-5, "gpu": 2e-5}  # the GPU's exp2/log2 are the hardware approximations
# With fp8_pv (but over per-token scales) the tensor cores sum P's rows as rounded to e4m3, and the
# log-sum-exp goes with those sums: a weight in e4m3's normal range moves by at most 2^-4 of itself,
# so the sum, and the log-sum-exp by at most about that much.
LSE_P_TOL = {"e4m3": 2.0 ** -4}


def bound(place, out_dtype, p_dtype):
    return BOUNDS[out_dtype] + (P_BOUNDS[p_dtype] if place == "gpu" else 0.0)


def p_dtype_of(q_dtype, kv_dtype):
    return "bfloat16" if q_dtype == kv_dtype == "bfloat16" else "float16"


def fp8_score_error(q, k, scale):
    """Bound on the output error that FP8 q over FP8 keys adds on the GPU. On Hopper, Q.K^T runs
    on the FP8 tensor cores, whose accumulator keeps 13 mantissa bits and truncates: each of the
    D/32 k-steps can move a score by 2^-13 of scale * sum_d |q_d k_d| (the sum bounds every
    partial sum), and a score error of delta changes the softmax weights by a factor within
    exp(+-delta), so the output by about delta relative to its norm. q [T, Hq, D] and k [N, Hkv,
    D] in real units (every key is taken: an upper bound). The log-sum-exp moves by at most delta.
    Kernels that keep exact FP8 products (decode, other head_dims) only get a looser bound."""
    group, dim = q.shape[1] // k.shape[1], q.shape[2]
    largest = max((np.abs(q[:, h]) @ np.abs(k[:, h // group]).T).max(initial=0.0) for h in range(q.shape[1]))
    return dim / 32 * 2.0 ** -13 * scale * largest


def half_score_error(q, k, scale):
    """Per row ([Hq, T], as the log-sum-exp): the bound on the score error a 16-bit q adds on the
    GPU. Its Q K^T runs on the fp16 tensor cores over K widened exactly, whose fp32 accumulator
    truncates: each of the D/16 k-steps can move a score by 2^-23 of scale * sum_d |q_d k_d|.
    Only where scores are huge does it count (a row's log-sum-exp in the millions, whose weights
    are then one-hot: its output does not move)."""
    group, dim = q.shape[1] // k.shape[1], q.shape[2]
    rows = [(np.abs(q[:, h]) @ np.abs(k[:, h // group]).T).max(axis=1, initial=0.0) for h in range(q.shape[1])]
    return dim / 16 * 2.0 ** -23 * scale * np.stack(rows)


def fp8_tensor(rng, shape, spread=64.0):
    """Random FP8 codes of standard normal values times `spread` (finite: saturated at 448)."""
    return ref.float_to_e4m3(rng.standard_normal(shape).astype(np.float32) * spread)


def prefill_codes(rng, lens_q, lens_k, hq, hkv, dim, q_dtype=None):
    """check_fp8's inputs: FP8 q/k/v codes of packed sequences and their per-tensor descales; with
    q_dtype (bf16 or fp16), q's values in that dtype instead and no q descale."""
    codes = [fp8_tensor(rng, (sum(lens), heads, dim)) for lens, heads in ((lens_q, hq), (lens_k, hkv), (lens_k, hkv))]
    descales = [np.float32([f / 64]) for f in (0.75, 0.5, 0.25)]
    if q_dtype:
        codes[0] = ref.random_half(rng, codes[0].shape, q_dtype)[0]
        descales[0] = None
    return codes, descales


def nan_or_largest_codes(rng, shape):
    """FP8 codes that would poison whatever read them: NaN (0x7F) or the largest finite (448)."""
    return np.where(rng.random(shape) < 0.5, 0x7F, 0x7E).astype(np.uint8)


def fp8_dtype_name():
    from fastattn.tensors import fp8_dtype
    return "float8_e4m3fn" if fp8_dtype() is not None else "uint8"


class PlacedCase(unittest.TestCase):
    """Runs each test body once per place (CPU, and the GPU where there is one)."""
    place = "cpu"

    def for_places(self, body):
        for place in places():
            with self.subTest(place=place):
                self.place = place
                body()

    def t(self, array, dtype=None):
        return host_from_numpy(array, dtype, self.place)

    def check_lse(self, lse, want_lse, score_error=0.0, p_dtype=None):
        tol = LSE_TOL[self.place]
        p_tol = LSE_P_TOL.get(p_dtype, 0.0) if self.place == "gpu" else 0.0
        self.assertEqual(np.shape(lse), np.shape(want_lse))
        atol = np.broadcast_to(tol + score_error + p_tol, np.shape(want_lse))  # (score_error may be per row)
        with np.errstate(invalid="ignore"):  # (-inf rows: equal, not within a tolerance)
            close = ((lse == want_lse) | (np.isnan(lse) & np.isnan(want_lse))
                     | (np.isfinite(want_lse) & (np.abs(lse - want_lse) <= atol + tol * np.abs(want_lse))))
        if not close.all():
            at = tuple(np.argwhere(~close)[0])
            self.fail(f"log-sum-exp: {np.count_nonzero(~close)} of {close.size} differ, the first at {at}: "
                      f"{lse[at]} against {want_lse[at]} (atol {atol[at]}, rtol {tol})")


def widened_kv(mode):
    """FASTATTN_WIDENED_KV for the calls inside: "always" widens V (with a 16-bit q K too) before
    the sm_90a kernel wherever that kernel can take it (over contiguous FP8 keys: FP8 q at head_dim
    128, a 16-bit q at every head_dim; given max_seqlen_kv, FP8 q over block_wise_fp8 at 128 and a
    16-bit q over either cache), "never" nowhere; otherwise the op chooses by the batch."""
    return mock.patch.dict(os.environ, {"FASTATTN_WIDENED_KV": mode})


# (FP8 q, quant, head_dim) of the paged calls whose K / V the GPU widens before the sm_90a kernel
# given max_seqlen_kv (and FASTATTN_WIDENED_KV=always).
WIDENED_PAGED = ((True, "block_wise_fp8", 128), (False, "cache_fp8", 128), (False, "block_wise_fp8", 128),
                 (False, "cache_fp8", 64), (False, "block_wise_fp8", 256))


def widened_kernel_only(fp8_q, quant, dim):
    """A bf16 q over block_wise_fp8 at head_dim 256 has an sm_90a kernel only over K and V widened
    before it: without the bound it runs another kernel, whose results differ in their rounding."""
    return not fp8_q and quant == "block_wise_fp8" and dim == 256


# The mixed-batch tests' wide GQA groups: (q heads, kv heads) -> (queries, keys) per sequence. At 16
# a decode's 16 rows are short; at 32 no sequence is.
MIXED_WIDE_GROUPS = {(16, 1): ([1, 100, 1, 2], [1500, 100, 33, 600]), (32, 1): ([1, 50, 1], [400, 90, 1000])}
# (queries, keys) of 40 sequences: chunks at 0, 33 and 39 among decodes (more than a warp's 32).
MANY_DECODES_AND_CHUNKS = ([50] + [1] * 32 + [70] + [1] * 5 + [40],
                           [300] + [60 + 23 * i for i in range(32)] + [500] + [90, 7, 400, 1, 260] + [170])


def placed(test):
    @functools.wraps(test)
    def wrapper(self):
        self.for_places(lambda: test(self))
    return wrapper


class TestFlashAttnVarlen(PlacedCase):
    def run_case(self, rng, lens_q, lens_k, hq, hkv, dim, causal, dtype="bfloat16", out_dtype=None, tail=0,
                 **kwargs):
        """`tail` more query tokens after the last sequence's, which belong to none."""
        tq, tk = sum(lens_q) + tail, sum(lens_k)
        q, _ = ref.random_half(rng, (tq, hq, dim), dtype)
        k, _ = ref.random_half(rng, (tk, hkv, dim), dtype)
        v, _ = ref.random_half(rng, (tk, hkv, dim), dtype)
        cq, ck = cu_seqlens(lens_q), cu_seqlens(lens_k)
        out, lse = ops.flash_attn_varlen(self.t(q, dtype), self.t(k, dtype), self.t(v, dtype),
                                         self.t(cq), self.t(ck), max(lens_q), max(lens_k),
                                         causal=causal, out_dtype=out_dtype, **kwargs)
        want, want_lse = ref.flash_attn_varlen(q, k, v, cq, ck, dim ** -0.5, causal)
        return float_values(out), to_numpy(lse), want, want_lse

    @placed
    def test_shapes_gqa_and_masks(self):
        for dim, (hq, hkv), causal, dtype in itertools.product((64, 128, 256), ((4, 4), (4, 1), (8, 1)),
                                                               (False, True), ("bfloat16", "float16")):
            with self.subTest(dim=dim, hq=hq, hkv=hkv, causal=causal, dtype=dtype):
                rng = seeded_rng(self, dim, hq, hkv, causal, dtype)
                got, lse, want, want_lse = self.run_case(rng, [1, 17, 5], [1, 17, 40], hq, hkv, dim, causal, dtype)
                self.assertLess(rel_err(got, want), bound(self.place, dtype, dtype))
                self.check_lse(lse, want_lse)

    @placed
    def test_long_sequences_and_splits(self):
        """Lengths 1, 17 and 1000+, causal and not, with the key range computed in one piece and
        split over several CTAs (GPU) and merged; and 64 queries over 4200 keys, split by the plan."""
        for causal, splits in itertools.product((True, False), (None, 1, 3)):
            with self.subTest(causal=causal, splits=splits):
                rng = seeded_rng(self, causal, splits)
                got, lse, want, want_lse = self.run_case(rng, [1030, 1, 17], [1030, 1, 1100], 8, 2, 128, causal,
                                                         out_dtype="float32", num_splits=splits)
                self.assertLess(rel_err(got, want), bound(self.place, "float32", "bfloat16"))
                self.check_lse(lse, want_lse)
        # Few queries over many keys leave most multiprocessors idle: the GPU's own plan splits them.
        for causal in (True, False):
            with self.subTest(causal=causal, queries=64, keys=4200):
                rng = seeded_rng(self, causal, "few queries")
                got, lse, want, want_lse = self.run_case(rng, [64], [4200], 8, 2, 128, causal, out_dtype="float32")
                self.assertLess(rel_err(got, want), bound(self.place, "float32", "bfloat16"))
                self.check_lse(lse, want_lse)

    @placed
    def test_more_queries_than_keys_and_empty_sequences(self):
        """Causal with Lq > Lk leaves the first Lq - Lk queries without keys; a sequence with no
        keys leaves all its queries without: out 0, lse -inf, no NaN."""
        rng = seeded_rng(self)
        got, lse, want, want_lse = self.run_case(rng, [6, 3, 0], [2, 0, 4], 2, 2, 64, True, out_dtype="float32")
        self.assertTrue((got[:4] == 0).all() and np.isneginf(lse[:, :4]).all())
        self.assertTrue((got[6:9] == 0).all() and np.isneginf(lse[:, 6:9]).all())
        self.assertFalse(np.isnan(got).any() or np.isnan(lse).any())
        self.assertLess(rel_err(got, want), bound(self.place, "float32", "bfloat16"))

    @placed
    def test_many_sequences(self):
        """Batches of 5, 40 and 1100 sequences, up to 3 queries each (decode CTAs) or up to 40
        (prefill CTAs), some with none: on the GPU each CTA finds its sequence in cu_seqlens_q by
        rounds of 32 candidates, one, two and three rounds at these batches."""
        for batch, most_queries in itertools.product((5, 40, 1100), (3, 40)):
            with self.subTest(batch=batch, most_queries=most_queries):
                rng = seeded_rng(self, batch, most_queries)
                lens_q = rng.integers(0, most_queries + 1, batch).tolist()
                lens_k = [n + int(rng.integers(1, 30)) for n in lens_q]
                got, lse, want, want_lse = self.run_case(rng, lens_q, lens_k, 4, 2, 64, True, out_dtype="float32")
                self.assertLess(rel_err(got, want), bound(self.place, "float32", "bfloat16"))
                self.check_lse(lse, want_lse)

    @placed
    def test_mixed_long_and_short_sequences(self):
        """Decodes and speculative tokens beside chunks, over bf16 and FP8 keys (FP8 q, and a bf16
        q), GQA groups 4, 16 and 32, with and without key splits: on the GPU the short sequences
        run in a launch of their own (see TestPagedAttention's test of the same name). Five query
        tokens past the last sequence belong to none: zeros and LSE -inf, written by the prefill
        launch alone."""
        tail = 5
        groups = {(8, 2): ([1, 300, 2, 0, 3, 1, 1, 90], [900, 300, 40, 5, 700, 1, 2000, 1000]), **MIXED_WIDE_GROUPS}
        for (hq, hkv), kv, splits in itertools.product(groups, ("bfloat16", "fp8", "fp8 q"), (None, 3)):
            with self.subTest(hq=hq, hkv=hkv, kv=kv, splits=splits):
                rng = seeded_rng(self, hq, kv, splits)
                lens_q, lens_k = groups[(hq, hkv)]
                if kv == "bfloat16":
                    got, lse, want, want_lse = self.run_case(rng, lens_q, lens_k, hq, hkv, 128, True,
                                                             out_dtype="float32", num_splits=splits, tail=tail)
                    self.assertLess(rel_err(got, want), bound(self.place, "float32", "bfloat16"))
                    self.check_lse(lse, want_lse)
                else:
                    q_dtype = None if kv == "fp8 q" else "bfloat16"
                    codes, descales = prefill_codes(rng, lens_q + [tail], lens_k + [0], hq, hkv, 128, q_dtype)
                    got, lse, _ = self.check_fp8(codes, descales, lens_q, lens_k, True, splits, q_dtype)
                self.assertTrue((got[-tail:] == 0).all() and np.isneginf(lse[:, -tail:]).all())

    @placed
    def test_fp8_inputs_with_descales(self):
        """FP8 q/k/v, and bf16 q over FP8 k/v, with per-(batch, kv head) and broadcast descales;
        the reference runs on the FP8 values times their descales."""
        hq, hkv, dim = 4, 2, 128
        for fp8_q, per_head, (lens_q, lens_k) in itertools.product((True, False), (True, False),
                                                                  (([3, 9], [11, 9]), ([70, 9], [90, 9]))):
            with self.subTest(fp8_q=fp8_q, per_head=per_head, lens_q=lens_q):
                rng = seeded_rng(self, fp8_q, per_head, lens_q[0])
                shape_d = (2, hkv) if per_head else (1,)
                scales = [rng.uniform(0.5, 1.0, shape_d).astype(np.float32) * f for f in (0.75, 0.5, 0.25)]
                cq, ck = cu_seqlens(lens_q), cu_seqlens(lens_k)

                def per_token(s, cu, heads):
                    s = np.broadcast_to(s, (2, hkv)) if s.shape == (1,) else s
                    rows = np.repeat(np.arange(2), np.diff(cu))
                    return np.repeat(s[rows], heads // hkv, axis=1)[..., None]

                k_codes = fp8_tensor(rng, (sum(lens_k), hkv, dim), 1.0)
                v_codes = fp8_tensor(rng, (sum(lens_k), hkv, dim), 1.0)
                k_real = ref.e4m3_to_float(k_codes) * per_token(scales[1], ck, hkv)
                v_real = ref.e4m3_to_float(v_codes) * per_token(scales[2], ck, hkv)
                fp8 = fp8_dtype_name()
                if fp8_q:
                    q_codes = fp8_tensor(rng, (sum(lens_q), hq, dim), 1.0)
                    q_in, q_real = self.t(q_codes, fp8), ref.e4m3_to_float(q_codes) * per_token(scales[0], cq, hq)
                    q_descale = self.t(scales[0], "float32")
                else:
                    q_real, _ = ref.random_half(rng, (sum(lens_q), hq, dim), "bfloat16")
                    q_in, q_descale = self.t(q_real, "bfloat16"), None
                out, lse = ops.flash_attn_varlen(
                    q_in, self.t(k_codes, fp8), self.t(v_codes, fp8), self.t(cq), self.t(ck), max(lens_q), max(lens_k),
                    softmax_scale=0.05, causal=True, q_descale=q_descale, k_descale=self.t(scales[1], "float32"),
                    v_descale=self.t(scales[2], "float32"), out_dtype="float32")
                want, want_lse = ref.flash_attn_varlen(q_real, k_real, v_real, cq, ck, 0.05, True)
                score_error = fp8_score_error(q_real, k_real, 0.05) if fp8_q and self.place == "gpu" else 0.0
                self.assertLess(rel_err(float_values(out), want), bound(self.place, "float32", "float16") + score_error)
                self.check_lse(to_numpy(lse), want_lse, score_error)

    def check_fp8(self, codes, descales, lens_q, lens_k, causal, splits=None, q_dtype=None, scale=None,
                  out_dtype="float32", fp8_pv=False, exact_scores=False):
        """FP8 q/k/v codes with per-tensor descales through flash_attn_varlen, against the
        reference on their real values: no NaN, and within the bounds of `out_dtype` (plus the FP8
        score error on the GPU, or where exact_scores says every product and partial sum of Q K^T
        fits the FP8 tensor cores' 13 bits, 2^-12 in the log-sum-exp: the row sums of P that the
        tensor cores take at head_dim 64; with fp8_pv, e4m3 P's). With q_dtype (bf16 or fp16),
        codes[0] is q's values in that dtype and descales[0] is None. Returns the output,
        log-sum-exp and the reference output."""
        dim = codes[0].shape[2]
        scale = dim ** -0.5 if scale is None else scale
        cq, ck = cu_seqlens(lens_q), cu_seqlens(lens_k)
        fp8 = fp8_dtype_name()
        real = [ref.e4m3_to_float(c) * d[0] for c, d in zip(codes[1:], descales[1:])]
        q_real = codes[0] if q_dtype else ref.e4m3_to_float(codes[0]) * descales[0][0]
        q_in = self.t(codes[0], q_dtype or fp8)
        q_descale = None if q_dtype else self.t(descales[0], "float32")
        out, lse = ops.flash_attn_varlen(
            q_in, *(self.t(c, fp8) for c in codes[1:]), self.t(cq), self.t(ck), max(lens_q), max(lens_k),
            softmax_scale=scale, causal=causal, q_descale=q_descale, k_descale=self.t(descales[1], "float32"),
            v_descale=self.t(descales[2], "float32"), out_dtype=out_dtype, num_splits=splits, fp8_pv=fp8_pv)
        want, want_lse = ref.flash_attn_varlen(q_real, *real, cq, ck, scale, causal)
        got, lse = float_values(out), to_numpy(lse)
        self.assertFalse(np.isnan(got).any() or np.isnan(lse).any())
        score_error, lse_error = 0.0, 0.0
        if self.place == "gpu" and not q_dtype:
            score_error = lse_error = 2.0 ** -12 if exact_scores else fp8_score_error(q_real, real[0], scale)
        elif self.place == "gpu":
            lse_error = half_score_error(q_real, real[0], scale)
        p_dtype = "e4m3" if fp8_pv else "float16"
        self.assertLess(rel_err(got, want), bound(self.place, out_dtype, p_dtype) + score_error)
        self.check_lse(lse, want_lse, lse_error, p_dtype)
        return got, lse, want

    @placed
    def test_fp8_prefill(self):
        """FP8 q/k/v prefill (the sm_90a kernel's case at every head_dim): lengths 1, 17, 1000+, a
        sequence with more queries than keys, causal and not, GQA 1/4/8, key splits; the reference
        runs on the FP8 values times their descales."""
        cases = [(128, hq, hkv, causal, splits) for (hq, hkv), causal, splits in
                 itertools.product(((2, 2), (8, 2), (8, 1)), (True, False), (None, 3))]
        cases += [(dim, *case) for dim in (64, 256)
                  for case in ((8, 2, True, None), (2, 2, False, 3), (8, 1, True, 3))]
        lens_q, lens_k = [1030, 1, 17, 6, 0], [1030, 1, 1100, 2, 3]
        for dim, hq, hkv, causal, splits in cases:
            with self.subTest(dim=dim, hq=hq, hkv=hkv, causal=causal, splits=splits):
                rng = seeded_rng(self, dim, hq, hkv, causal, splits)
                codes, descales = prefill_codes(rng, lens_q, lens_k, hq, hkv, dim)
                self.check_fp8(codes, descales, lens_q, lens_k, causal, splits)

    @placed
    def test_fp8_prefill_next_sequence_poisoned(self):
        """A sequence's rows do not depend on the queries after it. The sm_90a kernel copies an
        FP8 q's rows as a box of tokens where the GQA group divides a CTA's rows (groups 4 and 8
        here, and 3 at head_dim 64, whose CTAs have 192 rows), so a CTA's rows past its sequence's
        end hold the next sequence's queries, and drop what they compute; elsewhere (group 3 at
        head_dim 128 and 256) they repeat the last row.
        With NaN and the largest codes in the second sequence's q, the first sequence's output and
        log-sum-exp are bit for bit those of a clean q, and within the bound of the reference."""
        lens = [70, 50]
        fp8 = fp8_dtype_name()
        for dim, (hq, hkv) in itertools.product((64, 128, 256), ((8, 2), (8, 1), (6, 2))):
            with self.subTest(dim=dim, hq=hq, hkv=hkv):
                rng = seeded_rng(self, dim, hq, hkv)
                q, k, v = (fp8_tensor(rng, (sum(lens), heads, dim)) for heads in (hq, hkv, hkv))
                descales = [np.float32([f / 64]) for f in (0.75, 0.5, 0.25)]
                clean, clean_lse, _ = self.check_fp8([q, k, v], descales, lens, lens, True)
                poisoned = q.copy()
                poisoned[lens[0]:] = nan_or_largest_codes(rng, poisoned[lens[0]:].shape)
                cu = self.t(cu_seqlens(lens))
                out, lse = ops.flash_attn_varlen(
                    self.t(poisoned, fp8), self.t(k, fp8), self.t(v, fp8), cu, cu, max(lens), max(lens),
                    causal=True, q_descale=self.t(descales[0], "float32"), k_descale=self.t(descales[1], "float32"),
                    v_descale=self.t(descales[2], "float32"), out_dtype="float32")
                np.testing.assert_array_equal(float_values(out)[:lens[0]], clean[:lens[0]])
                np.testing.assert_array_equal(to_numpy(lse)[:, :lens[0]], clean_lse[:, :lens[0]])

    @placed
    def test_fp8_prefill_next_keys_poisoned(self):
        """A sequence's last key tile runs past its keys: the keys and values after them (here a
        sequence without queries, holding NaN and the largest codes) must read as zeros. The sm_90a
        kernel copies such a tile row by row with zeros past the end, or (at head_dim 128) copies V,
        with a bf16 q K too, as widened before it, with a tile's room of zeros after each
        sequence's keys. The other sequences' rows are bit for bit those of clean keys, and within
        the reference's bound. Both ways (FASTATTN_WIDENED_KV) at head_dim 128, and with a bf16 q
        at 64 and 256."""
        lens_q, lens_k = [70, 0, 150], [70, 90, 200]
        fp8 = fp8_dtype_name()
        cases = [(dim, heads, "auto", None) for dim in (64, 256) for heads in ((8, 2), (8, 1))]
        cases += [(128, heads, mode, None) for heads in ((8, 2), (8, 1)) for mode in ("always", "never")]
        cases += [(dim, (8, 2), mode, "bfloat16") for dim in (64, 128, 256) for mode in ("always", "never")]
        for dim, (hq, hkv), mode, q_dtype in cases:
            with self.subTest(dim=dim, hq=hq, hkv=hkv, mode=mode, q_dtype=q_dtype), widened_kv(mode):
                rng = seeded_rng(self, dim, hq, hkv, q_dtype)
                codes, descales = prefill_codes(rng, lens_q, lens_k, hq, hkv, dim, q_dtype)
                clean, clean_lse, _ = self.check_fp8(codes, descales, lens_q, lens_k, True, q_dtype=q_dtype)
                poisoned = [c.copy() for c in codes[1:]]
                for c in poisoned:
                    part = c[lens_k[0]:sum(lens_k[:2])]
                    part[...] = nan_or_largest_codes(rng, part.shape)
                out, lse = ops.flash_attn_varlen(
                    self.t(codes[0], q_dtype or fp8), *(self.t(c, fp8) for c in poisoned), self.t(cu_seqlens(lens_q)),
                    self.t(cu_seqlens(lens_k)), max(lens_q), max(lens_k), causal=True,
                    q_descale=None if q_dtype else self.t(descales[0], "float32"), k_descale=self.t(descales[1], "float32"),
                    v_descale=self.t(descales[2], "float32"), out_dtype="float32")
                np.testing.assert_array_equal(float_values(out), clean)
                np.testing.assert_array_equal(to_numpy(lse), clean_lse)

    @placed
    def test_widened_kv_contiguous(self):
        """FP8 k/v: the sm_90a kernel copies V (FP8 q at head_dim 128), or K and V (a bf16 or fp16
        q at every head_dim), widened once per call (each sequence's keys, then a tile's room of zeros), or widens
        each tile itself (FASTATTN_WIDENED_KV=always / never): the same results, bit for bit, and
        within the reference's bound. Sequences without queries or keys, a chunk with more queries
        than keys, more row tiles than multiprocessors, causal and not, key splits, GQA 1, 4 and 8,
        and a bf16 output (stored by tensor copies)."""
        few = ([1030, 1, 17, 6, 0], [1030, 1, 1100, 2, 3])
        many = ([400, 0, 1, 300, 17, 250, 0, 120, 600, 33, 5, 380, 64, 129, 200, 90],
                [400, 3, 1, 40, 17, 700, 9, 120, 600, 33, 1029, 380, 64, 129, 200, 90])
        twice_many = (many[0] * 2, many[1] * 2)
        cases = [(few, heads, causal, splits, "float32", q_dtype, 128) for heads in ((8, 2), (2, 2), (8, 1))
                 for causal, splits in ((True, None), (False, 3)) for q_dtype in (None, "bfloat16")]
        cases += [(many, (8, 2), True, None, "float32", q_dtype, 128) for q_dtype in (None, "float16")]
        cases += [(many, (8, 2), True, 3, "float32", None, 128), (many, (8, 2), False, None, "bfloat16", None, 128),
                  (many, (8, 2), False, None, "bfloat16", "bfloat16", 128)]
        cases += [(few, heads, causal, splits, "float32", "bfloat16", dim) for dim in (64, 256)
                  for heads, causal, splits in (((8, 2), True, None), ((8, 1), False, 3))]
        cases += [(many, (8, 2), True, None, "bfloat16", "float16", dim) for dim in (64, 256)]
        # (an fp16 output, and a group of 3 whose rows leave a chunk at a time; at head_dim 64 twice
        # the sequences, whose row tiles outnumber the multiprocessors)
        cases += [(few, (6, 2), True, None, "float16", "bfloat16", dim) for dim in (64, 256)]
        cases += [(twice_many, (8, 2), True, None, "bfloat16", "bfloat16", 64)]
        for (lens_q, lens_k), (hq, hkv), causal, splits, out_dtype, q_dtype, dim in cases:
            with self.subTest(rows=len(lens_q), hq=hq, hkv=hkv, causal=causal, splits=splits, out_dtype=out_dtype,
                              q_dtype=q_dtype, dim=dim):
                rng = seeded_rng(self, len(lens_q), hq, hkv, causal, splits, out_dtype, q_dtype, dim)
                codes, descales = prefill_codes(rng, lens_q, lens_k, hq, hkv, dim, q_dtype)
                runs = []
                for mode in ("always", "never") if self.place == "gpu" else ("always",):  # (the CPU has one way)
                    with widened_kv(mode):
                        runs.append(self.check_fp8(codes, descales, lens_q, lens_k, causal, splits, q_dtype,
                                                   out_dtype=out_dtype))
                for run in runs[1:]:
                    np.testing.assert_array_equal(run[0], runs[0][0])
                    np.testing.assert_array_equal(run[1], runs[0][1])

    @placed
    def test_16bit_query_power_per_row_tile(self):
        """A bf16 q goes to fp16 times a power of two of its row tile's largest element. Here kv
        head 1's q heads are 2^-30 times kv head 0's, and the softmax scale 2^30 times the usual
        (kv head 0's rows are then one-hot), with more row tiles than multiprocessors: with K and
        V widened before the sm_90a kernel its CTAs take row tile after row tile,
        and a power carried from one of kv head 0 to one of kv head 1 would leave the latter's q
        in fp16's subnormals. Every head_dim (at 64, whose row tiles are 192 rows, the sequences
        twice over, so that the row tiles still outnumber the multiprocessors)."""
        modes = ("always", "never") if self.place == "gpu" else ("always",)
        for dim, mode in itertools.product((64, 128, 256), modes):
            repeat = 2 if dim == 64 else 1
            lens_q = [400, 0, 1, 300, 17, 250, 0, 120, 600, 33, 5, 380, 64, 129, 200, 90] * repeat
            lens_k = [400, 3, 1, 40, 17, 700, 9, 120, 600, 33, 1029, 380, 64, 129, 200, 90] * repeat
            with self.subTest(dim=dim, mode=mode):
                codes, descales = prefill_codes(seeded_rng(self, dim, mode), lens_q, lens_k, 8, 2, dim, "bfloat16")
                codes[0][:, 4:] *= np.float32(2.0 ** -30)
                with widened_kv(mode):
                    self.check_fp8(codes, descales, lens_q, lens_k, True, None, "bfloat16", dim ** -0.5 * 2.0 ** 30)

    @placed
    def test_fp8_prefill_output_dtypes(self):
        """FP8 q/k/v prefill, and bf16 q over FP8 k/v, in each output dtype at every head_dim. The
        sm_90a kernel stages each computing warpgroup's 64 rows in shared memory (a stage, or with
        a 16-bit q an fp16 K buffer; not fp32 rows at head_dim 256, which go out from registers):
        where all of them are a sequence's and the GQA group divides 64, they leave by tensor copies
        (a 128-byte column tile each), elsewhere (a sequence's last rows; a group of 3) a 16-byte
        chunk at a time."""
        lens_q, lens_k = [600, 70, 17], [600, 200, 17]
        cases = [(q_dtype, heads) for q_dtype in (None, "bfloat16")
                 for heads in (((8, 2), (8, 1), (6, 2)) if q_dtype is None else ((8, 2),))]
        out_dtypes = ("bfloat16", "float16", "float32")
        for dim, out_dtype, (q_dtype, (hq, hkv)) in itertools.product((64, 128, 256), out_dtypes, cases):
            with self.subTest(dim=dim, out_dtype=out_dtype, q_dtype=q_dtype, hq=hq, hkv=hkv):
                rng = seeded_rng(self, dim, out_dtype, q_dtype, hq, hkv)
                kv = [fp8_tensor(rng, (sum(lens_k), hkv, dim)) for _ in range(2)]
                if q_dtype is None:
                    codes = [fp8_tensor(rng, (sum(lens_q), hq, dim))] + kv
                    descales = [np.float32([f / 64]) for f in (0.75, 0.5, 0.25)]
                else:
                    codes = [ref.random_half(rng, (sum(lens_q), hq, dim), q_dtype)[0]] + kv
                    descales = [None, np.float32([0.5 / 64]), np.float32([0.25 / 64])]
                self.check_fp8(codes, descales, lens_q, lens_k, True, q_dtype=q_dtype, out_dtype=out_dtype)

    @placed
    def test_16bit_query_over_fp8_prefill(self):
        """bf16 and fp16 q over FP8 k/v in a prefill (on sm_90 the wgmma kernel, with Q K^T in
        fp16): sequences of 600 and 17 queries over 600 and 700 keys, causal and not, GQA 1/4/8,
        key splits, every head_dim. A bf16 q goes to fp16 times a power of two: its values here
        are 2^40 or 2^-40 times normal ones (the softmax scale brings the scores back), and one
        sequence's are all zero."""
        lens_q, lens_k = [600, 1, 17, 6, 0], [600, 1, 700, 2, 3]
        for dim, (q_dtype, magnitude), (hq, hkv, causal, splits) in itertools.product(
                (64, 128, 256), (("bfloat16", 2.0 ** 40), ("bfloat16", 2.0 ** -40), ("float16", 1.0)),
                ((8, 2, True, None), (8, 2, False, 3), (2, 2, True, 3), (8, 1, False, None))):
            with self.subTest(dim=dim, q_dtype=q_dtype, magnitude=magnitude, hq=hq, hkv=hkv, causal=causal,
                              splits=splits):
                rng = seeded_rng(self, dim, q_dtype, magnitude, hq, hkv, causal, splits)
                q, _ = ref.random_half(rng, (sum(lens_q), hq, dim), q_dtype, magnitude)
                q[sum(lens_q[:3]):sum(lens_q[:4])] = 0.0
                codes = [q] + [fp8_tensor(rng, (sum(lens_k), hkv, dim)) for _ in range(2)]
                descales = [None, np.float32([0.5 / 64]), np.float32([0.25 / 64])]
                self.check_fp8(codes, descales, lens_q, lens_k, causal, splits, q_dtype, dim ** -0.5 / magnitude)

    def check_rising_scores(self, rng, lens_q, lens_k, dim, causal, q_dtype=None, fp8_pv=False, gain=1.0):
        """FP8 k/v (and FP8 q, or q_dtype's) whose scores (base 2) are the keys' codes times
        |gain|: codes rising about 3 per 128 keys with noise, jumping by 20 at key 700 and by 150
        at key 900; with a negative gain, -1 minus those, falling. q is ones and each key's
        elements are equal, so the tensor cores' scores are exact."""
        keys = np.concatenate([np.arange(n) for n in lens_k])
        rise = (1.0 + 3.0 * keys / 128 + rng.normal(0.0, 0.5, keys.size)
                + 20.0 * (keys >= 700) + 150.0 * (keys >= 900))
        codes_of_keys = np.abs(rise) if gain > 0 else -1.0 - np.abs(rise)
        ones = np.ones((sum(lens_q), 2, dim), np.float32)
        codes = [ones if q_dtype else ref.float_to_e4m3(ones),
                 ref.float_to_e4m3(codes_of_keys.astype(np.float32)[:, None, None] * np.ones((1, 1, dim), np.float32)),
                 fp8_tensor(rng, (sum(lens_k), 1, dim))]
        # score (base 2) = log2(e) * dim^-0.5 * (q . k) * descales = the key's code value times |gain|
        descales = [None if q_dtype else np.float32([1.0]), np.float32([abs(gain) * dim ** -0.5 / np.log2(np.e)]),
                    np.float32([1 / 64])]
        got, lse, _ = self.check_fp8(codes, descales, lens_q, lens_k, causal, q_dtype=q_dtype, fp8_pv=fp8_pv,
                                     exact_scores=True)
        self.assertTrue(np.isfinite(got).all() and np.isfinite(lse).all())

    @placed
    def test_fp8_prefill_more_row_tiles_than_multiprocessors(self):
        """Some 200 row tiles of 16 sequences, more than an H100 or H200 has multiprocessors: the
        sm_90a kernel with FP8 q at head_dim 128 runs a CTA per multiprocessor, and each takes
        tile after tile off a queue. Sequences without queries, a chunk with more queries than
        keys (its first 260 rows see no key: tiles without a key tile), causal and not, key splits;
        with fp8_pv too (its items stage their rows in their own fp32 sums, cleared per item)."""
        lens_q = [400, 0, 1, 300, 17, 250, 0, 120, 600, 33, 5, 380, 64, 129, 200, 90]
        lens_k = [400, 3, 1, 40, 17, 700, 9, 120, 600, 33, 1029, 380, 64, 129, 200, 90]
        for fp8_pv, (causal, splits) in itertools.product((False, True), ((True, None), (False, None), (True, 3))):
            with self.subTest(fp8_pv=fp8_pv, causal=causal, splits=splits):
                rng = seeded_rng(self, fp8_pv, causal, splits)
                codes, descales = prefill_codes(rng, lens_q, lens_k, 8, 2, 128)
                got, lse, _ = self.check_fp8(codes, descales, lens_q, lens_k, causal, splits, fp8_pv=fp8_pv)
                if causal:  # rows 0..259 of the chunk with 300 queries over 40 keys
                    first = sum(lens_q[:3])
                    self.assertTrue((got[first:first + 260] == 0).all() and np.isneginf(lse[:, first:first + 260]).all())

    @placed
    def test_fp8_prefill_rising_scores(self):
        """Rising scores in a prefill: the GPU kernel moves a row's max only when a tile's exceeds
        it by more than 8, so its weights P reach 2^8 before a rescale; at head_dim 128 it weighs a
        tile against the max before checking it, so the first jump overflows fp16 there and the
        second fp32 (that tile's scores are then computed again, from Q as staged: FP8, or a
        bf16 q's fp16)."""
        for dim, causal, q_dtype in itertools.product((64, 128, 256), (True, False), (None, "bfloat16")):
            with self.subTest(dim=dim, causal=causal, q_dtype=q_dtype):
                self.check_rising_scores(seeded_rng(self, dim, causal, q_dtype), [1030, 300], [1030, 300], dim, causal,
                                         q_dtype)

    @placed
    def test_scores_beyond_fp32_integers(self):
        """Rising scores 1.1 x 2^30 times larger, or that and negated (the row max near -2^30), at
        every head_dim, FP8 q (with fp8_pv where taken) and bf16 q. fp32's step there is 2^7 or
        more: a row max rounded from the tile's largest score must not weigh the exact scores
        against it (P's weights would reach 2^64 or 2^-64). (Not a power of two: the raw scores
        are exact, and the scale's products must round for that to show.)"""
        cases = [(dim, q_dtype, False) for dim, q_dtype in itertools.product((64, 128, 256), (None, "bfloat16"))]
        cases += [(64, None, True), (128, None, True)]
        gains = (1.1 * 2.0 ** 30, -1.1 * 2.0 ** 30)
        for (dim, q_dtype, fp8_pv), gain, causal in itertools.product(cases, gains, (True, False)):
            with self.subTest(dim=dim, q_dtype=q_dtype, fp8_pv=fp8_pv, gain=gain, causal=causal):
                self.check_rising_scores(seeded_rng(self, dim, q_dtype, fp8_pv, gain, causal), [1030, 300],
                                         [1030, 300], dim, causal, q_dtype, fp8_pv, gain)

    @placed
    def test_fp8_pv(self):
        """fp8_pv, on the cases of test_fp8_prefill and test_fp8_prefill_rising_scores: within e4m3
        P's bound where the sm_90a kernel takes it (head_dim 64 and 128, FP8 q; at 64 the tensor
        cores also sum P's rows, as rounded to e4m3); and bit for bit the default output where it
        is ignored (the CPU; head_dim 256; a bf16 q)."""
        lens_q, lens_k = [1030, 1, 17, 6, 0], [1030, 1, 1100, 2, 3]
        cases = [(dim, None, hq, hkv, causal, splits) for dim, (hq, hkv), causal, splits in
                 itertools.product((64, 128), ((2, 2), (8, 2), (8, 1)), (True, False), (None, 3))]
        cases += [(256, None, 8, 2, True, None), (128, "bfloat16", 8, 2, True, 3), (64, "bfloat16", 8, 2, True, None)]
        for dim, q_dtype, hq, hkv, causal, splits in cases:
            with self.subTest(dim=dim, q_dtype=q_dtype, hq=hq, hkv=hkv, causal=causal, splits=splits):
                rng = seeded_rng(self, dim, q_dtype, hq, hkv, causal, splits)
                codes, descales = prefill_codes(rng, lens_q, lens_k, hq, hkv, dim, q_dtype)
                got, lse, _ = self.check_fp8(codes, descales, lens_q, lens_k, causal, splits, q_dtype, fp8_pv=True)
                if self.place == "cpu" or dim == 256 or q_dtype:
                    default = self.check_fp8(codes, descales, lens_q, lens_k, causal, splits, q_dtype)
                    np.testing.assert_array_equal(got, default[0])
                    np.testing.assert_array_equal(lse, default[1])
        for dim, causal in itertools.product((64, 128), (True, False)):
            with self.subTest(rising_scores=True, dim=dim, causal=causal):
                self.check_rising_scores(seeded_rng(self, dim, causal), [1030, 300], [1030, 300], dim, causal,
                                         fp8_pv=True)

    @placed
    def test_fp8_pv_long_rows(self):
        """fp8_pv over rows of 1024 and 32768 keys in one key range (one CTA sums them all). The FP8
        tensor cores keep about 13 bits of a sum and truncate what a product has below them, so o
        alone would lose the later keys' share as it grows; the kernel adds it into fp32 sums every
        few tiles. With q = 0 every weight is the same power of two, exact in e4m3, and P V's
        accumulation is the only error: within 2^-10 (one level alone loses most of a long row, a
        fold every 2048 keys 8e-3; at head_dim 64 the row sums, on the tensor cores too, have their
        own second level); random values stay within e4m3 P's bound at either length."""
        hq, hkv, lq = 2, 1, 64
        for dim, exact_weights, lk in itertools.product((64, 128), (True, False), (1024, 32768)):
            with self.subTest(dim=dim, exact_weights=exact_weights, keys=lk):
                rng = seeded_rng(self, dim, exact_weights, lk)
                q, k, v = (rng.standard_normal((n, h, dim)) for n, h in ((lq, hq), (lk, hkv), (lk, hkv)))
                if exact_weights:
                    q, v = np.zeros_like(q), 1.0 + 0.25 * v
                codes = [ref.float_to_e4m3((x * 64).astype(np.float32)) for x in (q, k, v)]
                got, _, want = self.check_fp8(codes, [np.float32([1 / 64])] * 3, [lq], [lk], False, splits=1,
                                              fp8_pv=True)
                if exact_weights:
                    self.assertLess(rel_err(got, want), 2.0 ** -10)

    @placed
    def test_fp8_pv_small_weights(self):
        """fp8_pv moves a row's max so that its largest weight is 2^4: weights down to 2^-10 of it
        stay in e4m3's normal range (from 2^-6). Here one key scores 10 - log2(1.125) (base 2) above
        the other 511, whose weights, 9 x 2^-13 of its, become 9 x 2^-9: a normal e4m3 value, exact.
        One step lower they would be 4.5 x 2^-9, a subnormal that rounds by 11%. Their values are 1
        and the high key's 0, so the output is their share. At head_dim 128 the contiguous kernel
        weighs first and sums the weights in fp32, and o stays below 16 over 512 keys, where the FP8
        tensor cores' 13 bits still hold 2^-9: the output is exact up to fp32 (within 2^-10)."""
        lq, lk, hq, dim = 64, 512, 2, 128
        q = np.full((lq, hq, dim), 1.0, np.float32)
        k, v = np.zeros((lk, 1, dim), np.float32), np.ones((lk, 1, dim), np.float32)
        k[0], v[0] = 1.0, 0.0
        codes = [ref.float_to_e4m3(x) for x in (q, k, v)]
        scale = float(np.float32((10.0 - np.log2(1.125)) / (dim * np.log2(np.e))))
        got, _, want = self.check_fp8(codes, [np.float32([1.0])] * 3, [lq], [lk], False, splits=1, scale=scale,
                                      fp8_pv=True)
        self.assertLess(rel_err(got, want), 2.0 ** -10)

    @placed
    def test_fp8_decode_rising_scores(self):
        """Rising scores under one query per sequence (the GPU's decode kernel): it weighs a tile
        against the running max while no score exceeds it by more than 8, and takes the tile's
        max first where one does."""
        for dim in (64, 128, 256):
            with self.subTest(dim=dim):
                self.check_rising_scores(seeded_rng(self, dim), [1, 1], [1030, 300], dim, True)

    def test_bad_input(self):
        from_numpy = host_from_numpy
        q = from_numpy(np.zeros((4, 4, 64), np.float32), "bfloat16")
        k = from_numpy(np.zeros((4, 2, 64), np.float32), "bfloat16")
        cu = from_numpy(np.int32([0, 4]))
        good = dict(q=q, k=k, v=k, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=4, max_seqlen_k=4)
        fp8 = fp8_dtype_name()
        cases = [
            (ValueError, "q: 4 query heads is not a multiple of 3 kv heads",
             dict(k=from_numpy(np.zeros((4, 3, 64), np.float32), "bfloat16"),
                  v=from_numpy(np.zeros((4, 3, 64), np.float32), "bfloat16"))),
            (TypeError, "q: an FP8 q needs FP8 k and v", dict(q=from_numpy(np.zeros((4, 4, 64), np.uint8), fp8))),
            (ValueError, r"k_descale: only FP8 inputs take a descale", dict(k_descale=from_numpy(np.ones(1, np.float32)))),
            (ValueError, r"k_descale: expected shape \[1, 2\] or \[1\], got \[2, 2\]",
             dict(k=from_numpy(np.zeros((4, 2, 64), np.uint8), fp8), v=from_numpy(np.zeros((4, 2, 64), np.uint8), fp8),
                  k_descale=from_numpy(np.ones((2, 2), np.float32)))),
            (ValueError, r"cu_seqlens_k: expected shape \[2\]", dict(cu_seqlens_k=from_numpy(np.int32([0, 2, 4])))),
            (TypeError, "q: expected dtype", dict(q=from_numpy(np.zeros((4, 4, 64), np.float32)))),
            (ValueError, r"head_dim \(q.shape\[2\]\): expected one of 64, 128, 256, got 32",
             dict(q=from_numpy(np.zeros((4, 4, 32), np.float32), "bfloat16"),
                  k=from_numpy(np.zeros((4, 2, 32), np.float32), "bfloat16"),
                  v=from_numpy(np.zeros((4, 2, 32), np.float32), "bfloat16"))),
            (ValueError, "max_seqlen_q: expected a non-negative int", dict(max_seqlen_q=-1)),
            (TypeError, "k: expected bfloat16 like q", dict(k=from_numpy(np.zeros((4, 2, 64), np.float32), "float16"),
                                                            v=from_numpy(np.zeros((4, 2, 64), np.float32), "float16"))),
            (ValueError, "num_splits: expected None or a positive int", dict(num_splits=0)),
            (ValueError, "max_seqlen_k: expected a non-negative int below 2", dict(max_seqlen_k=2**31)),
            (ValueError, "max_seqlen_k: expected a non-negative int", dict(max_seqlen_k=True)),
            (ValueError, "k: expected at least one kv head",
             dict(k=from_numpy(np.zeros((4, 0, 64), np.float32), "bfloat16"),
                  v=from_numpy(np.zeros((4, 0, 64), np.float32), "bfloat16"))),
            (ValueError, "cu_seqlens_q: expected \\[batch \\+ 1\\] offsets, got an empty tensor",
             dict(cu_seqlens_q=from_numpy(np.zeros(0, np.int32)), cu_seqlens_k=from_numpy(np.zeros(0, np.int32)))),
            (ValueError, "q: expected a contiguous tensor, got a strided view", dict(q=q.transpose([1, 0, 2]))),
        ] + [(ValueError, f"cu_seqlens_{side}: expected non-decreasing offsets",
              {f"cu_seqlens_{side}": from_numpy(np.int32(bad))})
             for side in "qk" for bad in ([0, 5], [0, 100000], [0, -1])] + [
            (ValueError, "cu_seqlens_q: expected non-decreasing offsets starting at 0",
             dict(cu_seqlens_q=from_numpy(np.int32([1, 4])))),
        ]
        for error, message, override in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(error, message):
                    ops.flash_attn_varlen(**{**good, **override})

    @placed
    def test_rows_view_one_element_in(self):
        """q as a contiguous view one element into its allocation: the CPU kernel takes it as it
        is; the GPU kernels move rows 16 bytes at a time and refuse it."""
        rng = seeded_rng(self, self.place)
        q_vals = ref.random_half(rng, (6, 4, 64), "bfloat16")[0]
        k = self.t(ref.random_half(rng, (6, 2, 64), "bfloat16")[0], "bfloat16")
        flat = np.concatenate([np.zeros(1, np.uint16), ref.to_half_bits(q_vals, "bfloat16").ravel()])
        q_view = self.t(flat, "bfloat16")[1:].reshape([6, 4, 64])
        cu = self.t(np.int32([0, 6]))
        if self.place == "gpu":
            self.assertEqual(q_view.data_ptr() % 16, 2, "a view one element in")
            for checked in (True, False):
                with self.assertRaisesRegex(ValueError if checked else Exception,
                                            "q: the GPU kernels read .*16.*bytes at a time"):
                    ops.flash_attn_varlen(q_view, k, k, cu, cu, 6, 6, check_inputs=checked)
            return
        want = ops.flash_attn_varlen(self.t(q_vals, "bfloat16"), k, k, cu, cu, 6, 6, causal=True)
        got = ops.flash_attn_varlen(q_view, k, k, cu, cu, 6, 6, causal=True)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(to_numpy(g), to_numpy(w))

    def test_bad_offsets_without_the_python_checks(self):
        """check_inputs=False skips the wrapper's checks; the op still refuses offsets that would
        take it outside q, k or the output, and an empty batch, on the CPU (where the offsets are in
        host memory) and through `validate` on any device; and, on the CPU, kv heads of none and a
        head_dim its kernels do not take."""
        for place in places():
            rng = seeded_rng(self, place)
            t = functools.partial(host_from_numpy, place=place)
            q = t(ref.random_half(rng, (6, 4, 64), "bfloat16")[0], "bfloat16")
            k = t(ref.random_half(rng, (5, 2, 64), "bfloat16")[0], "bfloat16")
            good_q, good_k = t(np.int32([0, 2, 6])), t(np.int32([0, 3, 5]))
            for name, cu_q, cu_k in (("cu_seqlens_q", [0, 7, 7], [0, 3, 5]), ("cu_seqlens_q", [0, 4, 2], [0, 3, 5]),
                                     ("cu_seqlens_q", [3, 4, 6], [0, 3, 5]), ("cu_seqlens_k", [0, 2, 6], [0, 3, 6]),
                                     ("cu_seqlens_k", [0, 2, 6], [-1, 3, 5]), ("cu_seqlens_k", [0, 2, 6], [0, 4, 3])):
                for validate in ((False, True) if place == "cpu" else (True,)):
                    with self.subTest(place=place, cu_q=cu_q, cu_k=cu_k, validate=validate):
                        with self.assertRaisesRegex(ValueError if validate else Exception,
                                                    f"{name}: expected non-decreasing offsets"):
                            ops.flash_attn_varlen(q, k, k, t(np.int32(cu_q)), t(np.int32(cu_k)), 6, 6,
                                                  validate=validate, check_inputs=False)
            with self.subTest(place=place, offsets="good"):
                ops.flash_attn_varlen(q, k, k, good_q, good_k, 4, 3, validate=True, check_inputs=False)
            empty = t(np.zeros(0, np.int32))
            with self.subTest(place=place, offsets="empty", validate=True):
                with self.assertRaisesRegex(ValueError, r"cu_seqlens_q: expected \[batch \+ 1\] offsets"):
                    ops.flash_attn_varlen(q, k, k, empty, empty, 6, 6, validate=True, check_inputs=False)
            if place == "cpu":
                with self.assertRaisesRegex(Exception, r"cu_seqlens_q: expected \[batch \+ 1\]"):
                    ops.flash_attn_varlen(q, k, k, empty, empty, 6, 6, check_inputs=False)
                with self.assertRaisesRegex(Exception, "must be a positive multiple of the kv heads"):
                    none = t(np.zeros((5, 0, 64), np.float32), "bfloat16")
                    ops.flash_attn_varlen(q, none, none, good_q, good_k, 6, 6, check_inputs=False)
                with self.assertRaisesRegex(Exception, "q: head_dim must be 64, 128 or 256, got 96"):
                    q96, k96 = (t(np.zeros((n, h, 96), np.float32), "bfloat16") for n, h in ((6, 4), (5, 2)))
                    ops.flash_attn_varlen(q96, k96, k96, good_q, good_k, 6, 6, check_inputs=False)


# One paged_attention run against the reference, with fp8_score_error where it applies.
PagedRun = collections.namedtuple("PagedRun", "got lse want want_lse score_error")


class TestPagedAttention(PlacedCase):
    def make_cache(self, rng, quant, lens, heads, dim, block_size, dtype="bfloat16", value_gain=None,
                   scale_dtype="float32", scale_offset=0):
        """A cache holding `lens` random keys and values per sequence (values times `value_gain`
        [tokens] where given; block_wise_fp8 scale tables in `scale_dtype`, views that start
        `scale_offset` elements into their allocation); returns (batch, layer caches, block
        tables, real k and v)."""
        from_numpy = self.t
        batch = PagedBatch(rng, block_size, lens)
        caches = cache.allocate_kv_caches(1, batch.num_blocks, heads, block_size, dim, quant, dtype, self.place)
        layer = type("Layer", (), {})()
        layer.layer_id, layer.cache_quant_type_str = 0, quant
        if quant in ("cache_int8", "cache_fp8"):
            cache.set_static_scales(layer, np.full((2, heads), 3.5), self.place)
        lc = cache.layer_caches(caches, layer)
        k, _ = ref.random_half(rng, (sum(lens), heads, dim), dtype)
        v, _ = ref.random_half(rng, (sum(lens), heads, dim), dtype)
        if value_gain is not None:
            v = ref.half_bits_to_float(ref.to_half_bits(v * np.float32(value_gain)[:, None, None], dtype), dtype)
        tables = from_numpy(batch.block_tables)
        ops.write_cache_kv(from_numpy(k, dtype), from_numpy(v, dtype), lc.key_cache, lc.value_cache, tables,
                           from_numpy(cu_seqlens(lens)), from_numpy(np.zeros(len(lens), np.int32)), **lc.write_args())
        if scale_dtype == "bfloat16":  # the tables as written, rounded to bf16
            for name in ("k_scale_cache", "v_scale_cache"):
                setattr(lc, name, from_numpy(ref.to_half_bits(to_numpy(getattr(lc, name)), "bfloat16"), "bfloat16"))
        if scale_offset:
            for name in ("k_scale_cache", "v_scale_cache"):
                table = to_numpy(getattr(lc, name))
                whole = from_numpy(np.concatenate([np.zeros(scale_offset, table.dtype), table.ravel()]), scale_dtype)
                view = whole[scale_offset:].reshape(table.shape)
                if self.place == "gpu":  # a view indeed, where the kernels read it
                    self.assertEqual(view.data_ptr() - whole.data_ptr(), scale_offset * table.itemsize)
                setattr(lc, name, view)
        real = []
        for c, dq, table in ((lc.key_cache, lc.k_dequant_scale, lc.k_scale_cache),
                             (lc.value_cache, lc.v_dequant_scale, lc.v_scale_cache)):
            real.append(ref.dequantized_cache(to_numpy(c), quant, None if dq is None else to_numpy(dq),
                                              None if table is None else to_numpy(table), dtype))
        return batch, lc, tables, real

    # NaN in each cache dtype's raw form (to_numpy's): FP8 and 16-bit floats as bits. int8 has none.
    NAN_CODES = {"float8_e4m3fn": ref.FP8_NAN_BYTE, "bfloat16": ref.HALF_NAN_BITS, "float16": ref.HALF_NAN_BITS,
                 "float32": np.nan}

    def poison_unwritten(self, lc, block_tables, lens):
        """Fills every cache slot that holds no key of a sequence under `block_tables` (past its
        length in its last block; unmapped and free blocks) with NaN, and its per-token scale too."""
        num_blocks, _, block_size = to_numpy(lc.key_cache).shape[:3]
        written = np.zeros((num_blocks, block_size), bool)
        for seq, n in enumerate(lens):
            for pos in range(n):
                place = ref.cache_row(block_tables, num_blocks, block_size, seq, pos)
                if place is not None:
                    written[place] = True
        for name in ("key_cache", "value_cache", "k_scale_cache", "v_scale_cache"):
            t = getattr(lc, name)
            dtype = None if t is None else str(t.dtype).replace("paddle.", "")
            if dtype not in self.NAN_CODES:
                continue
            array = to_numpy(t).copy()
            array.transpose(0, 2, 1, *range(3, array.ndim))[~written] = self.NAN_CODES[dtype]
            setattr(lc, name, self.t(array, dtype))

    def run_paged(self, rng, quant, lens, q_lens, heads_q, heads_kv, dim, block_size, dtype="bfloat16",
                  kv_end=None, unmap=(), fp8_q=False, poison=False, value_gain=None, scale_dtype="float32",
                  scale_offset=0, q_spread=64.0, table_width=None, **kwargs):
        """Writes `lens` tokens per sequence (see make_cache), optionally unmaps (sequence, logical
        block) entries of the table and fills the slots left without a key with NaN (poison),
        attends with `q_lens` queries per sequence (FP8 codes of standard normal values times
        q_spread, with a q_descale, if fp8_q; softmax_scale 1/sqrt(dim) unless given), the block
        tables padded with block 0 to `table_width` columns where given; returns (got, lse, want,
        want_lse)."""
        scale = kwargs.setdefault("softmax_scale", dim ** -0.5)
        batch, lc, tables, (k_real, v_real) = self.make_cache(rng, quant, lens, heads_kv, dim, block_size, dtype,
                                                              value_gain, scale_dtype, scale_offset)
        for seq, logical in unmap:
            batch.block_tables[seq, logical] = -1
        if unmap:
            tables = self.t(batch.block_tables)
        if table_width is not None:
            padded = np.zeros((len(lens), table_width), np.int32)
            padded[:, :batch.block_tables.shape[1]] = batch.block_tables
            tables = self.t(padded)
        if poison:
            self.poison_unwritten(lc, batch.block_tables, lens)
        if fp8_q:
            codes = fp8_tensor(rng, (sum(q_lens), heads_q, dim), q_spread)
            q_descale = np.float32([0.75 / 64])
            q = ref.e4m3_to_float(codes) * q_descale[0]
            q_in = self.t(codes, fp8_dtype_name())
            kwargs["q_descale"] = self.t(q_descale, "float32")
        else:
            q, _ = ref.random_half(rng, (sum(q_lens), heads_q, dim), dtype)
            q_in = self.t(q, dtype)
        cq = cu_seqlens(q_lens)
        out, lse = ops.paged_attention(q_in, lc.key_cache, lc.value_cache, tables,
                                       self.t(np.int32(lens)), self.t(cq),
                                       kv_end=None if kv_end is None else self.t(kv_end),
                                       out_dtype="float32", **lc.read_args(), **kwargs)
        want, want_lse = ref.paged_attention(q, k_real, v_real, batch.block_tables, lens, cq, scale, True, kv_end)
        score_error = 0.0
        if fp8_q and quant != "cache_int8" and self.place == "gpu":
            score_error = fp8_score_error(q, k_real.transpose(0, 2, 1, 3).reshape(-1, heads_kv, dim), abs(scale))
            if dim == 64 and quant == "cache_fp8":  # P's row sums on the tensor cores: fp16, the LSE within 2^-12
                score_error = max(score_error, 2.0 ** -12)
        return PagedRun(float_values(out), to_numpy(lse), want, want_lse, score_error)

    def check(self, run, p_dtype):
        self.assertFalse(np.isnan(run.got).any() or np.isnan(run.lse).any())
        self.assertLess(rel_err(run.got, run.want), bound(self.place, "float32", p_dtype) + run.score_error)
        self.check_lse(run.lse, run.want_lse, run.score_error, p_dtype)

    def check_bound_changes_nothing(self, bounded, unbounded, other_kernel=False):
        """A run given max_seqlen_kv against the same run without it: right, and bit for bit the
        same (where the bound takes another kernel, other_kernel: both held to the reference)."""
        self.check(bounded, "float16")
        if other_kernel:
            self.check(unbounded, "float16")
            return
        np.testing.assert_array_equal(bounded.got, unbounded.got)
        np.testing.assert_array_equal(bounded.lse, unbounded.lse)

    @placed
    def test_every_quant_type_decode_and_chunked_prefill(self):
        lens, heads_kv, heads_q = [70, 1, 0, 33], 2, 8
        for quant, dim, block_size in itertools.product(ref.QUANT_TYPES, (64, 128, 256), (16, 32, 64, 128)):
            with self.subTest(quant=quant, dim=dim, block_size=block_size):
                rng = seeded_rng(self, quant, dim, block_size)
                q_lens = [5, 1, 0, 1]  # a chunk of 5, two decodes, an empty sequence
                kv_end = np.full(sum(q_lens), 10 ** 6, np.int32)
                kv_end[0], kv_end[2] = 0, 20  # a row with no key; a row masked past key 20
                run = self.run_paged(rng, quant, lens, q_lens, heads_q, heads_kv, dim, block_size, kv_end=kv_end)
                self.assertTrue((run.got[0] == 0).all() and np.isneginf(run.lse[:, 0]).all())
                self.check(run, p_dtype_of("bfloat16", "bfloat16" if quant == "none" else "fp8"))

    @placed
    def test_decode_two_column_tiles(self):
        """Decode batches of more than 8 rows (query x q head) per sequence: a GQA group of 16, and
        a few queries per sequence at group 4 with causal rows; the GPU's decode CTAs then take
        two tiles of 8 rows."""
        for quant, (heads_q, heads_kv, q_lens) in itertools.product(
                ("none", "cache_fp8", "block_wise_fp8"), ((16, 1, [1, 1, 1]), (8, 2, [4, 4, 1]))):
            with self.subTest(quant=quant, heads_q=heads_q, heads_kv=heads_kv, q_lens=q_lens):
                rng = seeded_rng(self, quant, heads_q, q_lens[0])
                run = self.run_paged(rng, quant, [300, 77, 1000], q_lens, heads_q, heads_kv, 128, 64)
                self.check(run, p_dtype_of("bfloat16", "bfloat16" if quant == "none" else "fp8"))

    @placed
    def test_mixed_long_and_short_sequences(self):
        """A server's mixed step: chunks of prompts beside decodes, speculative tokens and an empty
        sequence. On the GPU the sequences of one decode CTA's rows or fewer (8 at a GQA group of
        4, 16 at 16; none at 32) run in a launch of their own beside the prefill kernel's, with and
        without key splits; each launch must write all of its rows and none of the other's."""
        groups = {(8, 2): ([1, 200, 2, 0, 3, 1, 130], [900, 1300, 40, 5, 700, 1, 130]), **MIXED_WIDE_GROUPS}
        cases = [(quant, heads, splits, 128, False) for quant, heads, splits in
                 itertools.product(ref.QUANT_TYPES, groups, (None, 3))]
        cases += [(quant, (8, 2), None, dim, fp8_q) for quant, dim, fp8_q in
                  itertools.product(("cache_fp8", "block_wise_fp8"), (64, 256), (False, True))]
        for quant, (heads_q, heads_kv), splits, dim, fp8_q in cases:
            with self.subTest(quant=quant, heads_q=heads_q, heads_kv=heads_kv, splits=splits, dim=dim, fp8_q=fp8_q):
                rng = seeded_rng(self, quant, heads_q, splits, dim, fp8_q)
                q_lens, lens = groups[(heads_q, heads_kv)]
                run = self.run_paged(rng, quant, lens, q_lens, heads_q, heads_kv, dim, 64, fp8_q=fp8_q,
                                     num_splits=splits)
                self.check(run, p_dtype_of("bfloat16", "bfloat16" if quant == "none" else "fp8"))

    @placed
    def test_fp16_gqa_ratios_and_long_chunks(self):
        """fp16 queries over each quant type, GQA ratios 1/4/8, a chunked prefill long enough for
        the 64-row CTA shape, with forced key splits."""
        for quant, (heads_q, heads_kv), splits in itertools.product(ref.QUANT_TYPES, ((4, 4), (8, 2), (8, 1)),
                                                                    (None, 4)):
            with self.subTest(quant=quant, heads_q=heads_q, heads_kv=heads_kv, splits=splits):
                rng = seeded_rng(self, quant, heads_q, heads_kv, splits)
                run = self.run_paged(rng, quant, [300, 77], [120, 1], heads_q, heads_kv, 128, 32, dtype="float16",
                                     num_splits=splits)
                self.check(run, "float16")

    @placed
    def test_fp8_query(self):
        """FP8 q with a q_descale over each quantized cache, decode and a long chunk; the reference
        takes q as its FP8 values times the descale."""
        for quant, q_lens in itertools.product(("cache_int8", "cache_fp8", "block_wise_fp8"), ([1, 1], [70, 1])):
            with self.subTest(quant=quant, q_lens=q_lens):
                rng = seeded_rng(self, quant, q_lens[0])
                self.check(self.run_paged(rng, quant, [150, 90], q_lens, 8, 2, 128, 32, fp8_q=True), "float16")

    @placed
    def test_fp8_query_chunked_prefill_masks(self):
        """FP8 q over each quantized cache in chunks long enough for the prefill kernels (the sm_90a
        one for cache_fp8 at head_dim 128): GQA 1/4/8, kv_end rows with no key or a cut in the
        middle of a tile, unmapped blocks at the start, forced key splits."""
        for quant, (heads_q, heads_kv), splits in itertools.product(("cache_int8", "cache_fp8", "block_wise_fp8"),
                                                                    ((2, 2), (8, 2), (8, 1)), (None, 3)):
            with self.subTest(quant=quant, heads_q=heads_q, heads_kv=heads_kv, splits=splits):
                rng = seeded_rng(self, quant, heads_q, heads_kv, splits)
                lens, q_lens = [420, 77, 9], [150, 1, 9]
                kv_end = np.full(sum(q_lens), 10 ** 6, np.int32)
                kv_end[[0, 7, 150]] = 0, 200, 0  # rows with no key, a cut mid-tile, a decode with none
                run = self.run_paged(rng, quant, lens, q_lens, heads_q, heads_kv, 128, 64, kv_end=kv_end,
                                     unmap=[(0, 0), (0, 1)], fp8_q=True, num_splits=splits)
                self.assertTrue((run.got[[0, 150]] == 0).all() and np.isneginf(run.lse[:, [0, 150]]).all())
                self.check(run, "float16")

    @placed
    def test_fp8_query_chunked_prefill_head_dims(self):
        """The same over cache_fp8 at head_dim 64, 128 and 256 (the sm_90a kernel's tiles are 128,
        128 and 64 keys; whole tiles arrive by tensor copies of a cache block, or of a tile from a
        larger block), with every block size: smaller than, equal to and larger than a tile; and
        bf16 q at each head_dim, which the sm_90a kernel takes too."""
        cases = list(itertools.product((64, 128, 256), (True, False)))
        for (dim, fp8_q), block_size, splits in itertools.product(cases, (16, 32, 64, 128), (None, 3)):
            with self.subTest(dim=dim, fp8_q=fp8_q, block_size=block_size, splits=splits):
                rng = seeded_rng(self, dim, fp8_q, block_size, splits)
                lens, q_lens = [420, 77, 9], [150, 1, 9]
                kv_end = np.full(sum(q_lens), 10 ** 6, np.int32)
                kv_end[[0, 7, 150]] = 0, 200, 0
                run = self.run_paged(rng, "cache_fp8", lens, q_lens, 8, 2, dim, block_size, kv_end=kv_end,
                                     unmap=[(0, 0), (0, 2)], fp8_q=fp8_q, num_splits=splits)
                self.assertTrue((run.got[[0, 150]] == 0).all() and np.isneginf(run.lse[:, [0, 150]]).all())
                self.check(run, "float16")

    @placed
    def test_scores_beyond_fp32_integers(self):
        """A bf16 q over each quantized cache with the softmax scale 2^30 times the usual: scores
        near 2^30, where fp32's step is 2^6 or more (see TestFlashAttnVarlen's test of the same
        name), in a chunk and in decodes, at every head_dim; over cache_fp8 and block_wise_fp8 with
        K and V widened first too."""
        for quant, dim in itertools.product(("cache_int8", "cache_fp8", "block_wise_fp8"), (64, 128, 256)):
            modes = ("always", "never") if quant != "cache_int8" and dim == 128 else ("never",)
            for mode in modes:
                with self.subTest(quant=quant, dim=dim, widened=mode), widened_kv(mode):
                    run = self.run_paged(seeded_rng(self, quant, dim, mode), quant, [420, 77, 9], [150, 1, 9], 8, 2,
                                         dim, 64, softmax_scale=dim ** -0.5 * 2.0 ** 30,
                                         max_seqlen_kv=420 if mode == "always" else None)
                    self.check(run, "float16")

    @placed
    def test_fp8_query_unmapped_blocks_in_long_chunks(self):
        """Unmapped blocks far into long sequences, in tiles that arrive by tensor copies and in a
        sequence's last, partial tile (copied row by row): the sm_90a kernel notes such a tile in
        its stage, which later tiles reuse, so a stale note would mask mapped keys and a lost one
        would let an unmapped block's zeros in. FP8 and bf16 q at every head_dim."""
        cases = list(itertools.product((64, 128, 256), (True, False)))
        for (dim, fp8_q), block_size, splits in itertools.product(cases, (16, 64, 128), (None, 3)):
            with self.subTest(dim=dim, fp8_q=fp8_q, block_size=block_size, splits=splits):
                rng = seeded_rng(self, dim, fp8_q, block_size, splits)
                lens, q_lens = [1900, 700], [130, 70]
                unmap = sorted({(0, key // block_size) for key in (300, 1100, 1500, 1850)} | {(1, 650 // block_size)})
                run = self.run_paged(rng, "cache_fp8", lens, q_lens, 8, 2, dim, block_size, unmap=unmap,
                                     fp8_q=fp8_q, num_splits=splits)
                self.check(run, "float16")

    @placed
    def test_block_wise_chunked_prefill(self):
        """Chunks over a block_wise_fp8 cache long enough for the prefill kernels (the sm_90a one
        stages each tile's per-token scales beside its keys, except for a 16-bit q at head_dim 256
        that widens K and V itself): FP8 and bf16 q at every head_dim, block sizes against the
        tiles (FP8 q at head_dim 128 has a kernel of its own for blocks of 16 and 32 keys), fp32
        and bf16 scale tables, forced splits, kv_end cuts and unmapped blocks, NaN in every slot
        and scale that holds no key (the odd lengths leave one beside a sequence's last scale).
        Every 61st value is larger by a gain rising along the sequence: most tiles raise the
        largest value scale so far, and what the tiles before them added must follow. A bf16 q
        also with K and V widened before the kernel (max_seqlen_kv, FASTATTN_WIDENED_KV=always)."""
        lens, q_lens = [1000, 77, 9], [130, 1, 9]
        gain = np.ones(sum(lens))
        gain[::61] = 2.0 ** (np.arange(sum(lens))[::61] / 200.0)
        cases = [(*case, {}) for case in itertools.product((64, 128, 256), (True, False), (16, 32, 64, 128),
                                                             (("float32", None), ("bfloat16", 3)))]
        cases += [(dim, False, block_size, tables, {"max_seqlen_kv": max(lens)}) for dim in (64, 128, 256)
                  for block_size in (16, 64) for tables in (("float32", None), ("bfloat16", 3))]
        for dim, fp8_q, block_size, (scale_dtype, splits), bound in cases:
            with self.subTest(dim=dim, fp8_q=fp8_q, block_size=block_size, scale_dtype=scale_dtype, splits=splits,
                              bound=bool(bound)), widened_kv("always" if bound else "never"):
                rng = seeded_rng(self, dim, fp8_q, block_size, splits, bool(bound))
                kv_end = np.full(sum(q_lens), 10 ** 6, np.int32)
                kv_end[[0, 7, 130]] = 0, 200, 0  # rows with no key, a cut mid-tile, a decode with none
                run = self.run_paged(rng, "block_wise_fp8", lens, q_lens, 8, 2, dim, block_size, kv_end=kv_end,
                                     unmap=[(0, 0), (0, 2), (0, 700 // block_size)], poison=True, fp8_q=fp8_q,
                                     num_splits=splits, value_gain=gain, scale_dtype=scale_dtype, **bound)
                self.assertTrue((run.got[[0, 130]] == 0).all() and np.isneginf(run.lse[:, [0, 130]]).all())
                self.check(run, "float16")

    @placed
    def test_paged_fp8_query_more_row_tiles_than_multiprocessors(self):
        """test_fp8_prefill_more_row_tiles_than_multiprocessors over cache_fp8 and block_wise_fp8
        caches, FP8 q at head_dim 64 and 128 (queue-fed CTAs there too; where Q K^T reads Q from
        shared memory the items' Q in two buffers by turns; 16 q / 4 kv heads at 64, whose CTAs take
        192 rows), in blocks of 64 and of 16 (whose tiles' copies go out from two warps), with kv_end
        rows without a key, unmapped blocks and key splits; with fp8_pv at head_dim 128 too (queue-fed
        over both caches, its rows staged in its fp32 sums)."""
        lens = [400, 3, 1, 700, 17, 250, 9, 120, 600, 33, 1029, 380, 64, 129, 200, 90]
        q_lens = [400, 0, 1, 300, 17, 250, 0, 120, 600, 33, 5, 380, 64, 129, 200, 90]
        blocks = ((64, None), (16, None), (64, 3))
        cases = [(dim, quant, block, False) for dim, quant, block in
                 itertools.product((64, 128), ("cache_fp8", "block_wise_fp8"), blocks)]
        cases += [(128, quant, block, True) for quant, block in itertools.product(("cache_fp8", "block_wise_fp8"), blocks)]
        for dim, quant, (block_size, splits), fp8_pv in cases:
            with self.subTest(dim=dim, quant=quant, block_size=block_size, splits=splits, fp8_pv=fp8_pv):
                rng = seeded_rng(self, dim, quant, block_size, splits, fp8_pv)
                heads_q, heads_kv = (16, 4) if dim == 64 else (8, 2)
                kv_end = np.full(sum(q_lens), 10 ** 6, np.int32)
                kv_end[[0, 700, 1500]] = 0, 90, 0  # rows without a key, a cut mid-tile
                run = self.run_paged(rng, quant, lens, q_lens, heads_q, heads_kv, dim, block_size, kv_end=kv_end,
                                     unmap=[(3, 1), (10, 5)], poison=True, fp8_q=True, num_splits=splits, fp8_pv=fp8_pv)
                self.assertTrue((run.got[[0, 1500]] == 0).all() and np.isneginf(run.lse[:, [0, 1500]]).all())
                self.check(run, "e4m3" if fp8_pv else "float16")

    @placed
    def test_widened_kv(self):
        """max_seqlen_kv: the sm_90a kernel can then copy V (FP8 q over block_wise_fp8 at head_dim
        128), or K and V (a bf16 q over either cache, every head_dim), widened once per call (zeros
        past each sequence and at unmapped blocks) instead of widening them per tile (FP8 q over
        cache_fp8: nothing changes); forced here (FASTATTN_WIDENED_KV=always). The same results as
        without it, bit for bit, in every block size (a bf16 q: 16 and 64), with forced splits,
        kv_end cuts, NaN in the slots without a key, and more row tiles than multiprocessors (CTAs
        then take item after item: with FP8 q the stage ring turns over between them, with a bf16 q
        the fp16 K and V rings). A bound equal to the longest sequence and one past it. (Without a
        bound a bf16 q over block_wise_fp8 at head_dim 256 takes the mma.sync kernel: there both
        are held to the reference only.)"""
        short = ([1000, 77, 9], [130, 1, 9], [0, 7, 130], [(0, 0), (0, 2)])
        many = ([400, 3, 1, 700, 17, 250, 9, 120, 600, 33, 1029, 380, 64, 129, 200, 90],
                [400, 0, 1, 300, 17, 250, 0, 120, 600, 33, 5, 380, 64, 129, 200, 90], [0, 700, 1500], [(3, 1), (10, 5)])
        quants = ("cache_fp8", "block_wise_fp8")
        cases = [(True, quant, block_size, 128) for quant in quants for block_size in (16, 32, 64, 128)]
        cases += [(False, quant, block_size, 128) for quant in quants for block_size in (16, 64)]
        cases += [(False, quant, 64, dim) for quant in quants for dim in (64, 256)]
        for (fp8_q, quant, block_size, dim), splits, (lens, q_lens, cut, unmap) in itertools.product(
                cases, (None, 3), (short, many)):
            extra = 0 if splits is None else 333
            with self.subTest(fp8_q=fp8_q, quant=quant, block_size=block_size, dim=dim, splits=splits, rows=len(lens),
                              extra=extra):
                kv_end = np.full(sum(q_lens), 10 ** 6, np.int32)
                kv_end[cut] = 0, 90, 0
                with widened_kv("always"):
                    runs = [self.run_paged(seeded_rng(self, fp8_q, quant, block_size, dim, splits, len(lens)), quant,
                                           lens, q_lens, 8, 2, dim, block_size, kv_end=kv_end, unmap=unmap, poison=True,
                                           fp8_q=fp8_q, num_splits=splits, **bound)
                            for bound in ({}, {"max_seqlen_kv": max(lens) + extra})]
                self.check_bound_changes_nothing(runs[1], runs[0], widened_kernel_only(fp8_q, quant, dim))

    @placed
    def test_widened_kv_bound_below_a_sequence(self):
        """Without validate, a max_seqlen_kv below a sequence's keys: where the GPU widens K / V
        before the sm_90a kernel (FP8 q over block_wise_fp8 at head_dim 128, a bf16 q over either
        cache) that sequence's rows come out NaN, not silently wrong, and the others stay right;
        the CPU ignores the bound. Far below, and by a single group of 8 keys (inside the buffer's
        spare tile)."""
        lens, q_lens = [1000, 300], [130, 140]
        for (fp8_q, quant, dim), bound in itertools.product(WIDENED_PAGED, (700, 992)):
            with self.subTest(fp8_q=fp8_q, quant=quant, dim=dim, bound=bound):
                with widened_kv("always"):
                    run = self.run_paged(seeded_rng(self, fp8_q, quant, dim, bound), quant, lens, q_lens, 8, 2, dim,
                                         64, fp8_q=fp8_q, max_seqlen_kv=bound, validate=False)
                if self.place == "gpu" and sm90_gpu():
                    self.assertTrue(np.isnan(run.got[:130]).all())
                    rest = PagedRun(run.got[130:], run.lse[:, 130:], run.want[130:], run.want_lse[:, 130:],
                                    run.score_error)
                    self.check(rest, "float16")
                else:
                    self.check(run, "float16")

    @placed
    def test_widened_kv_rows_left_unwritten(self):
        """Where the GPU widens K / V before the sm_90a kernel (FP8 q over block_wise_fp8 at
        head_dim 128, a bf16 q over either cache) it writes each sequence's keys up to its last
        tile, not the bound's: the rows it leaves must never be read. Freed memory of the buffer's
        size, filled with NaN, goes back to the allocator first, so that the buffers likely get it;
        the bound is far past every sequence (none a whole number of tiles). The same results as
        without the bound, bit for bit (held to the reference only where that takes another kernel:
        a bf16 q over block_wise_fp8 at head_dim 256)."""
        lens, q_lens, max_seqlen_kv, heads_kv = [700, 77, 9, 300], [130, 1, 9, 64], 3000, 2
        buffer_keys = (max_seqlen_kv + 7) // 8 * 8 + 128  # (the buffer's rows per sequence)
        for fp8_q, quant, dim in WIDENED_PAGED:
            with self.subTest(fp8_q=fp8_q, quant=quant, dim=dim):
                nan_fill = np.full((len(lens) * buffer_keys, heads_kv, dim), np.nan, np.float16)
                freed = [self.t(nan_fill, "float16") for _ in range(8)]
                del freed
                with widened_kv("always"):
                    runs = [self.run_paged(seeded_rng(self, fp8_q, quant, dim), quant, lens, q_lens, 8, heads_kv, dim,
                                           64, fp8_q=fp8_q, **bound)
                            for bound in ({"max_seqlen_kv": max_seqlen_kv}, {})]
                self.check_bound_changes_nothing(runs[0], runs[1], widened_kernel_only(fp8_q, quant, dim))

    @placed
    def test_widened_kv_buffers_capped(self):
        """A bound whose widened buffers would pass 2 GiB (two sequences under a bound of 2^31 - 1,
        block tables 2^20 blocks wide: some 270 GB): K and V are not widened, even with
        FASTATTN_WIDENED_KV=always (the kernel widens for itself; a bf16 q over block_wise_fp8 at
        head_dim 256 runs on mma.sync), and the results are those without the bound, bit for bit."""
        lens, q_lens = [300, 77], [130, 64]
        for fp8_q, quant, dim in WIDENED_PAGED:
            with self.subTest(fp8_q=fp8_q, quant=quant, dim=dim):
                with widened_kv("always"):
                    runs = [self.run_paged(seeded_rng(self, fp8_q, quant, dim), quant, lens, q_lens, 8, 2, dim, 64,
                                           fp8_q=fp8_q, table_width=1 << 20, **bound)
                            for bound in ({"max_seqlen_kv": 2 ** 31 - 1}, {})]
                self.check_bound_changes_nothing(runs[0], runs[1])

    @placed
    def test_widened_kv_mixed_step(self):
        """A server's mixed step given max_seqlen_kv and max_multi_token_seqs, as the backends call
        it: where the GPU widens K / V before the sm_90a kernel (forced here) only the prefill
        launch's sequences get rows in the buffers, in batch order, so that decodes beside a chunk
        widen nothing of theirs. Chunks, 2- and 3-token speculative sequences (8 and 12 rows at a
        group of 4: short and long), an empty sequence, a group of 16, 40 sequences (a warp counts
        the prefill launch's sequences before one 32 at a time); the count exact and past the
        batch's; forced splits. The same results as without the bounds, bit for bit (held to the
        reference only where that takes another kernel: a bf16 q over block_wise_fp8 at head_dim
        256)."""
        layouts = [((8, 2), [1, 200, 2, 0, 3, 1, 130], [900, 1300, 40, 5, 700, 1, 130]),
                   ((16, 1), *MIXED_WIDE_GROUPS[(16, 1)]), ((8, 2), *MANY_DECODES_AND_CHUNKS)]
        for (fp8_q, quant, dim), ((heads_q, heads_kv), q_lens, lens), splits, spare in itertools.product(
                WIDENED_PAGED, layouts, (None, 3), (0, 2)):
            with self.subTest(fp8_q=fp8_q, quant=quant, dim=dim, heads_q=heads_q, seqs=len(lens), splits=splits,
                              spare=spare):
                bounds = {"max_seqlen_kv": max(lens), "max_multi_token_seqs": sum(n > 1 for n in q_lens) + spare}
                with widened_kv("always"):
                    runs = [self.run_paged(seeded_rng(self, fp8_q, quant, dim, len(lens), splits), quant, lens,
                                           q_lens, heads_q, heads_kv, dim, 64, fp8_q=fp8_q, num_splits=splits, **bound)
                            for bound in (bounds, {})]
                self.check_bound_changes_nothing(runs[0], runs[1], widened_kernel_only(fp8_q, quant, dim))

    @placed
    def test_widened_kv_multi_token_count_below(self):
        """Without validate, a max_multi_token_seqs below the batch's count: where the GPU widens
        K / V before the sm_90a kernel, the prefill launch's sequences past the count (in batch
        order) share one more slot of the buffers, NaN throughout, so that their rows come out
        NaN, not silently wrong; the others, the decodes among them, stay right. The CPU ignores
        it. Five sequences under a count of 1, and 40 under a count of 2 (the last chunk past it)."""
        many_q_lens, many_lens = MANY_DECODES_AND_CHUNKS
        few = ([900, 300, 700, 50, 400], [130, 1, 70, 1, 40], 1, (2, 4))
        many = (many_lens, many_q_lens, 2, (39,))
        for (fp8_q, quant, dim), (lens, q_lens, count, nan_seqs) in itertools.product(WIDENED_PAGED, (few, many)):
            with self.subTest(fp8_q=fp8_q, quant=quant, dim=dim, seqs=len(lens)):
                with widened_kv("always"):
                    run = self.run_paged(seeded_rng(self, fp8_q, quant, dim, len(lens)), quant, lens, q_lens, 8, 2,
                                         dim, 64, fp8_q=fp8_q, max_seqlen_kv=max(lens), max_multi_token_seqs=count,
                                         validate=False)
                if self.place == "gpu" and sm90_gpu():
                    cu = cu_seqlens(q_lens)
                    nan_tokens = np.concatenate([np.arange(cu[b], cu[b + 1]) for b in nan_seqs])
                    self.assertTrue(np.isnan(run.got[nan_tokens]).all())
                    rest = np.setdiff1d(np.arange(sum(q_lens)), nan_tokens)
                    self.check(PagedRun(run.got[rest], run.lse[:, rest], run.want[rest], run.want_lse[:, rest],
                                        run.score_error), "float16")
                else:
                    self.check(run, "float16")

    def test_widened_kv_bound_checked(self):
        """max_seqlen_kv must be a positive host int, and (with validate) no queried sequence longer;
        max_multi_token_seqs a non-negative host int, and (with validate) no fewer than the batch's
        sequences of two queries or more."""
        rng = seeded_rng(self)
        for bad in (0, -5, 2.5, True):
            with self.subTest(bad=bad), self.assertRaisesRegex(ValueError, "max_seqlen_kv"):
                self.run_paged(rng, "cache_fp8", [300, 77], [5, 1], 8, 2, 128, 64, fp8_q=True, max_seqlen_kv=bad)
        with self.assertRaisesRegex(ValueError, "max_seqlen_kv: 299 is below"):
            self.run_paged(rng, "cache_fp8", [300, 77], [5, 1], 8, 2, 128, 64, fp8_q=True, max_seqlen_kv=299,
                           validate=True)
        for bad in (-1, 2.5, True):
            with self.subTest(bad=bad), self.assertRaisesRegex(ValueError, "max_multi_token_seqs"):
                self.run_paged(rng, "cache_fp8", [300, 77], [5, 1], 8, 2, 128, 64, max_multi_token_seqs=bad)
        with self.assertRaisesRegex(ValueError, "max_multi_token_seqs: 1 is below the batch's 2"):
            self.run_paged(rng, "cache_fp8", [300, 77, 9], [5, 1, 2], 8, 2, 128, 64, max_multi_token_seqs=1,
                           validate=True)

    @placed
    def test_fp8_pv_chunked_prefill(self):
        """fp8_pv with FP8 q over cache_fp8 and block_wise_fp8 (the sm_90a kernels at head_dim 64
        and 128; over block_wise_fp8 each key's v scale multiplies its fp32 weight before P is
        rounded to e4m3): block sizes against the tiles, forced splits, kv_end cuts, unmapped
        blocks, NaN in every slot without a key, and v scales rising along the sequence (as in
        test_block_wise_chunked_prefill); within e4m3 P's bound."""
        lens, q_lens = [1000, 77, 9], [130, 1, 9]
        gain = np.ones(sum(lens))
        gain[::61] = 2.0 ** (np.arange(sum(lens))[::61] / 200.0)
        for dim, quant, block_size, splits in itertools.product((64, 128), ("cache_fp8", "block_wise_fp8"),
                                                                (16, 64, 128), (None, 3)):
            with self.subTest(dim=dim, quant=quant, block_size=block_size, splits=splits):
                rng = seeded_rng(self, dim, quant, block_size, splits)
                kv_end = np.full(sum(q_lens), 10 ** 6, np.int32)
                kv_end[[0, 7, 130]] = 0, 200, 0
                run = self.run_paged(rng, quant, lens, q_lens, 8, 2, dim, block_size, kv_end=kv_end,
                                     unmap=[(0, 0), (0, 2), (0, 700 // block_size)], poison=True, fp8_q=True,
                                     num_splits=splits, value_gain=gain if quant == "block_wise_fp8" else None,
                                     fp8_pv=True)
                self.assertTrue((run.got[[0, 130]] == 0).all() and np.isneginf(run.lse[:, [0, 130]]).all())
                self.check(run, "e4m3")

    @placed
    def test_block_wise_scale_tables_at_an_offset(self):
        """Scale tables that are views starting past their allocation's first element, as tables
        sliced from a larger buffer would be. The GPU kernels copy scales in pairs: a table that
        starts on a pair gives the right result, on the sm_90a kernel where a lane's copy of 4
        keys' scales (2 at head_dim 256) is aligned and on the mma.sync kernel otherwise; one that
        does not is refused on the GPU. The CPU takes any. (A bf16 q at head_dim 256 has an sm_90a
        kernel over per-token scales only with K and V widened before it: max_seqlen_kv, forced.)"""
        for dim, fp8_q, scale_dtype, offset in itertools.product((128, 256), (True, False), ("float32", "bfloat16"),
                                                                 (1, 2)):
            bound = {"max_seqlen_kv": 1000} if widened_kernel_only(fp8_q, "block_wise_fp8", dim) else {}
            with self.subTest(dim=dim, fp8_q=fp8_q, scale_dtype=scale_dtype, offset=offset), \
                    widened_kv("always" if bound else "never"):
                rng = seeded_rng(self, dim, fp8_q, scale_dtype, offset)
                run = functools.partial(self.run_paged, rng, "block_wise_fp8", [1000, 77], [130, 1], 8, 2, dim, 64,
                                        fp8_q=fp8_q, scale_dtype=scale_dtype, scale_offset=offset, **bound)
                if self.place == "gpu" and offset % 2:
                    with self.assertRaisesRegex(Exception, "k_scale: the GPU kernels read scales in pairs"):
                        run()
                else:
                    self.check(run(), "float16")

    @placed
    def test_prefill_with_a_scale_not_positive(self):
        """A negative or zero softmax scale (legal, if odd) over the 8-bit caches, in chunks long
        enough for the prefill kernels: FP8 and bf16 q at every head_dim. Over one scale the
        kernels fold a positive scale into the exponent, after the max, and any other into the
        scores before it; over per-token scales each key's multiplier carries the scale, sign and
        all. One key range per sequence, so that a CTA's rows meet several tiles without a mask, and
        small FP8 q codes, so that a score left unscaled would rarely overflow a weight (whose
        recovery would hide it)."""
        cases = itertools.product((64, 128, 256), (True, False), ("cache_fp8", "block_wise_fp8"), (-0.7, 0.0))
        for dim, fp8_q, quant, factor in cases:
            with self.subTest(dim=dim, fp8_q=fp8_q, quant=quant, factor=factor):
                rng = seeded_rng(self, dim, fp8_q, quant, factor)
                run = self.run_paged(rng, quant, [700, 9], [130, 9], 8, 2, dim, 64, fp8_q=fp8_q, num_splits=1,
                                     softmax_scale=factor * dim ** -0.5, q_spread=0.25)
                self.check(run, "float16")

    @placed
    def test_slots_without_a_key_hold_nan(self):
        """Every cache slot that holds no key (past a sequence's length in its last block, in
        unmapped and free blocks) and its per-token scale hold NaN: keys past the end read as
        zeros, unmapped blocks are skipped, and warps or splits that saw no key drop out of the
        merges, so no NaN reaches the output (0 x NaN in P V would). Decode, bf16 chunks and FP8
        q chunks (the sm_90a kernel over cache_fp8), split and not, every head_dim for cache_fp8."""
        modes = {"decode": ([1, 1, 1], False), "chunk": ([40, 1, 9], False), "fp8 q chunk": ([150, 1, 9], True)}
        cases = [(quant, 128, mode) for quant, mode in itertools.product(ref.QUANT_TYPES, modes)
                 if quant != "none" or mode != "fp8 q chunk"]
        cases += [("cache_fp8", dim, mode) for dim, mode in itertools.product((64, 256), ("decode", "fp8 q chunk"))]
        for (quant, dim, mode), splits in itertools.product(cases, (None, 3)):
            with self.subTest(quant=quant, dim=dim, mode=mode, splits=splits):
                rng = seeded_rng(self, quant, dim, mode, splits)
                q_lens, fp8_q = modes[mode]
                run = self.run_paged(rng, quant, [420, 77, 9], q_lens, 8, 2, dim, 64, unmap=[(0, 2)], poison=True,
                                     fp8_q=fp8_q, num_splits=splits)
                self.check(run, "float16" if fp8_q else p_dtype_of("bfloat16", "bfloat16" if quant == "none" else "fp8"))

    @placed
    def test_rows_masked_in_the_first_key_block_only(self):
        """Unmapped blocks at the start of a sequence: the first key tile a row sees is fully
        masked, later ones are not; an unmapped block in the middle is skipped too."""
        for quant in ref.QUANT_TYPES:
            with self.subTest(quant=quant):
                rng = seeded_rng(self, quant)
                run = self.run_paged(rng, quant, [200, 150], [3, 1], 8, 2, 128, 16,
                                     unmap=[(0, 0), (0, 1), (0, 2), (0, 3), (0, 6), (1, 0)])
                self.check(run, p_dtype_of("bfloat16", "bfloat16" if quant == "none" else "fp8"))

    @placed
    def test_error_does_not_grow_with_context(self):
        """Decode over 1k and 32k cached keys drawn the same way: the output's error stays at the
        rounding of single weights (the CPU: fp32; the GPU: fp16 P), not growing with length."""
        errors = []
        for length in (1024, 32768):
            rng = seeded_rng(self, length)
            run = self.run_paged(rng, "block_wise_fp8", [length], [1], 4, 1, 128, 64)
            errors.append(rel_err(run.got, run.want))
        self.assertLess(errors[1], 3 * errors[0] + 1e-6, errors)
        self.assertLess(errors[1], 1e-5 if self.place == "cpu" else P_BOUNDS["float16"])

    def test_bad_input(self):
        from_numpy = host_from_numpy
        rng = seeded_rng(self)
        batch, lc, tables, _ = self.make_cache(rng, "cache_fp8", [20], 2, 64, 16)
        q = from_numpy(np.zeros((1, 4, 64), np.float32), "bfloat16")
        good = dict(q=q, key_cache=lc.key_cache, value_cache=lc.value_cache, block_tables=tables,
                    seq_lens_kv=from_numpy(np.int32([20])), cu_seqlens_q=from_numpy(np.int32([0, 1])),
                    **lc.read_args())
        cases = [
            (ValueError, "k_dequant_scale: required", dict(k_dequant_scale=None)),
            (ValueError, r"kv_end: expected shape \[1\]", dict(kv_end=from_numpy(np.int32([1, 2])))),
            (ValueError, r"seq_lens_kv: expected shape \[1\]", dict(seq_lens_kv=from_numpy(np.int32([1, 2])))),
            (TypeError, "q: an FP8 q needs an FP8/INT8 cache",
             dict(q=from_numpy(np.zeros((1, 4, 64), np.uint8), fp8_dtype_name()), cache_quant_type="none",
                  k_dequant_scale=None, v_dequant_scale=None)),
            (ValueError, "q_descale: only an FP8 q takes a descale", dict(q_descale=from_numpy(np.ones(1, np.float32)))),
            (ValueError, "cu_seqlens_q: expected non-decreasing offsets starting at 0",
             dict(cu_seqlens_q=from_numpy(np.int32([0, 2])))),
            (ValueError, "seq_lens_kv\\[0\\] = -1: expected a non-negative length",
             dict(seq_lens_kv=from_numpy(np.int32([-1])), validate=True)),
            (ValueError, r"block_tables\[0, 2\] = -1 is outside",
             dict(seq_lens_kv=from_numpy(np.int32([40])), validate=True)),
            (ValueError, "value_cache: expected a contiguous tensor",
             dict(value_cache=from_numpy(np.stack([to_numpy(lc.value_cache)] * 2, axis=1),
                                         str(lc.value_cache.dtype).replace("paddle.", ""))[:, 0])),
        ]
        for error, message, override in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(error, message):
                    ops.paged_attention(**{**good, **override})

        unchecked = dict(good, check_inputs=False)
        for message, override in (
                ("value_cache: dtype differs from key_cache",
                 dict(value_cache=from_numpy(np.zeros(lc.value_cache.shape, np.float32), "bfloat16"))),
                ("key_cache: cache_quant_type 'none' holds bfloat16 or float16",
                 dict(cache_quant_type="none", k_dequant_scale=None, v_dequant_scale=None)),
                ("must be a positive multiple of the kv heads",
                 dict(key_cache=from_numpy(np.zeros((2, 0, 16, 64), np.uint8), "uint8"),
                      value_cache=from_numpy(np.zeros((2, 0, 16, 64), np.uint8), "uint8"))),
                ("cu_seqlens_q: expected non-decreasing offsets",
                 dict(cu_seqlens_q=from_numpy(np.int32([0, 100000]))))):
            with self.subTest(message=message, checked=False):
                with self.assertRaisesRegex(Exception, message):
                    ops.paged_attention(**{**unchecked, **override})

    def test_keys_past_the_block_table(self):
        """seq_lens_kv past what the block table can map: those positions hold no key, so the
        result is attention over the keys the table maps (bit for bit on the CPU; on the GPU the
        key splits cut the longer range elsewhere, so sums may round differently). The CPU kernel
        does not visit the rest, so it takes the int32 limit at once (the GPU kernels step through
        the unmapped tiles)."""
        for place in places():
            with self.subTest(place=place):
                self.place = place
                rng = seeded_rng(self, place)
                batch, lc, tables, _ = self.make_cache(rng, "cache_fp8", [40], 2, 64, 16)
                reach = tables.shape[1] * 16
                q = self.t(ref.random_half(rng, (3, 4, 64), "bfloat16")[0], "bfloat16")
                args = dict(q=q, key_cache=lc.key_cache, value_cache=lc.value_cache, block_tables=tables,
                            cu_seqlens_q=self.t(np.int32([0, 3])), **lc.read_args())
                want = ops.paged_attention(seq_lens_kv=self.t(np.int32([reach])), causal=False, **args)
                for keys in (reach + 1, reach + 300) + ((2**31 - 1,) if place == "cpu" else ()):
                    got = ops.paged_attention(seq_lens_kv=self.t(np.int32([keys])), **args)
                    if place == "cpu":
                        for g, w in zip(got, want):
                            np.testing.assert_array_equal(to_numpy(g), to_numpy(w))
                    else:
                        self.assertLess(rel_err(float_values(got[0]), float_values(want[0])), 2 * 2.0 ** -8)
                        self.check_lse(to_numpy(got[1]), to_numpy(want[1]))


if __name__ == "__main__":
    unittest.main()
