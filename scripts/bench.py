"""Benchmarks of every fastattn op on the GPU, next to ceilings measured in the same run.

    PYTHONPATH=... python scripts/bench.py [--out DIR] [--only NAME ...] [--reps N] [--sustain S]

Writes DIR/bench.json, DIR/bench.md and, where matplotlib imports, DIR/bench.png. Each op is timed
three ways (medians over --reps batches, CUDA events): its GPU time, with a batch of calls queued
behind a held stream so that they run back to back; the time per call of a plain dygraph loop; and
the host time to issue one call (see time_gpu). Working sets smaller than the L2 cache (the batch 8
and 1 decodes, merges of 21 MB) partly stay there from call to call: their GPU times are best cases.
Memory-bound ops are judged by the bytes they must move (each input read once, each output written
once) over the device-to-device copy bandwidth measured at the start of the run; attention prefill
by the tensor cores' time for its FLOPs at the fp8 or bf16 matmul rate measured there, as the
kernel's formats take them. Under load the GPU's power cap moves the SM clock (1.7-1.98 GHz on an
H200), so each row and each ceiling also gives the mean SM clock sampled while it was timed: compare
ratios at like clocks. A few warm-up calls leave the clock where the last pause left it, so the
compute-bound rows time a GPU that has not yet reached its cap. --sustain S runs each op and each
ceiling back to back for S seconds before timing it: the steady state of a GPU serving without pause
(an H100 at its 700 W cap ran FP8 prefill at 1.5-1.7 GHz there, 5-14% slower).

Inputs are built on the CPU and copied over; the ops are called through the registered op
(no Python validation) so the numbers are the kernels'.
"""
import argparse
import collections
import ctypes
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paddle  # noqa: E402

from fastattn import reference as ref  # noqa: E402
from fastattn._ext import fast_module, ops_module  # noqa: E402
from fastattn.tensors import from_numpy  # noqa: E402

CASES = {}


def case(name):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


# ---------------------------------------------------------------------------------------------
# timing and ceilings


class DriverEvents:
    """CUDA events through the driver API (libcuda), recorded on Paddle's current stream.
    Paddle 2.6's own Event reports whole milliseconds only.

    hold() makes the stream wait on a flag in mapped host memory until release(): calls issued
    in between queue up and then run back to back, so events around them time the GPU's work
    alone, however long the host takes to issue each call."""

    def __init__(self):
        self.cuda = ctypes.CDLL("libcuda.so.1")
        flag = ctypes.c_void_p()
        self._check(self.cuda.cuMemHostAlloc(ctypes.byref(flag), ctypes.c_size_t(4), ctypes.c_uint(0x2)),
                    "cuMemHostAlloc")  # CU_MEMHOSTALLOC_DEVICEMAP
        self.flag = ctypes.c_uint32.from_address(flag.value)
        self.flag_device = ctypes.c_uint64()
        get_pointer = getattr(self.cuda, "cuMemHostGetDevicePointer_v2", self.cuda.cuMemHostGetDevicePointer)
        self._check(get_pointer(ctypes.byref(self.flag_device), flag, ctypes.c_uint(0)), "cuMemHostGetDevicePointer")
        self.wait_value = getattr(self.cuda, "cuStreamWaitValue32_v2", self.cuda.cuStreamWaitValue32)
        self.watchdog_fired = False

    def _check(self, result, what):
        if result != 0:
            raise RuntimeError(f"{what} failed with CUresult {result}")

    @staticmethod
    def _stream():
        return ctypes.c_void_p(paddle.device.current_stream()._as_parameter_.value)

    def create(self):
        event = ctypes.c_void_p()
        self._check(self.cuda.cuEventCreate(ctypes.byref(event), 0), "cuEventCreate")
        return event

    def record(self, event):
        self._check(self.cuda.cuEventRecord(event, self._stream()), "cuEventRecord")

    def elapsed_ms(self, start, end):
        self._check(self.cuda.cuEventSynchronize(end), "cuEventSynchronize")
        ms = ctypes.c_float()
        self._check(self.cuda.cuEventElapsedTime(ctypes.byref(ms), start, end), "cuEventElapsedTime")
        return ms.value

    def hold(self):
        self.flag.value = 0
        self._check(self.wait_value(self._stream(), self.flag_device, ctypes.c_uint32(1), ctypes.c_uint(0)),
                    "cuStreamWaitValue32")  # CU_STREAM_WAIT_VALUE_GEQ
        # Should a call wait on the GPU itself (a synchronizing allocation, say), the held stream
        # would never drain: release it after a while and report the batch as unusable.
        self.watchdog = threading.Timer(5.0, self._expire)
        self.watchdog.start()

    def _expire(self):
        self.watchdog_fired = True
        self.flag.value = 1

    def release(self):
        self.watchdog.cancel()
        self.flag.value = 1


class SmClockLog:
    """The SM clock of the GPU Paddle runs on, sampled every 20 ms by NVML in a background thread,
    so that any wall-clock window of the run (this process's or the ceiling script's) can be given
    its mean clock. Without NVML it records nothing and every window reads nan."""

    def __init__(self, period_s=0.02):
        self.samples, self.period_s = [], period_s  # samples: (time.time(), MHz)
        try:
            nvml = ctypes.CDLL("libnvidia-ml.so.1")
            cuda = ctypes.CDLL("libcuda.so.1")
            device, bus_id, handle = ctypes.c_int(), ctypes.create_string_buffer(32), ctypes.c_void_p()
            ok = (cuda.cuDeviceGet(ctypes.byref(device), int(paddle.device.get_device().split(":")[1])) == 0
                  and cuda.cuDeviceGetPCIBusId(bus_id, 32, device) == 0 and nvml.nvmlInit_v2() == 0
                  and nvml.nvmlDeviceGetHandleByPciBusId_v2(bus_id, ctypes.byref(handle)) == 0)
        except (OSError, AttributeError):
            ok = False
        if not ok:
            print("warning: no NVML; SM clocks not recorded", file=sys.stderr)
            return

        def sample():
            mhz = ctypes.c_uint()
            while True:
                if nvml.nvmlDeviceGetClockInfo(handle, 1, ctypes.byref(mhz)) == 0:  # NVML_CLOCK_SM
                    self.samples.append((time.time(), mhz.value))
                time.sleep(period_s)
        threading.Thread(target=sample, daemon=True).start()

    def mean_mhz(self, begin, end):
        """The mean clock over [begin, end], widened by a period on each side so that a window
        shorter than the period still meets a sample."""
        inside = [mhz for t, mhz in self.samples if begin - self.period_s <= t <= end + self.period_s]
        return float(np.mean(inside)) if inside else float("nan")


SM_CLOCK = None  # the run's SmClockLog, started by main()
SUSTAIN_S = 0.0  # --sustain: seconds of back-to-back calls before each timing

Timing = collections.namedtuple("Timing", "gpu_ms call_ms host_ms sm_mhz")


def time_gpu(fn, reps=30, inner=10, warmup=3):
    """Medians over `reps` batches of `inner` calls of fn():
    gpu_ms: GPU time per call, the batch queued behind a held stream (no gaps between calls);
    call_ms: time per call of a plain back-to-back loop, what a dygraph caller sees (host-bound
             where issuing a call takes longer than its kernels);
    host_ms: host time to issue one call;
    sm_mhz: the mean SM clock while the batches ran."""
    events = DriverEvents()
    for _ in range(warmup):
        fn()
    paddle.device.cuda.synchronize()
    sustained_until = time.time() + SUSTAIN_S
    while time.time() < sustained_until:
        for _ in range(inner):
            fn()
        paddle.device.cuda.synchronize()
    start, end = events.create(), events.create()
    gpu, host, call = [], [], []
    begin = time.time()
    for _ in range(reps):
        events.hold()
        events.record(start)
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        host.append((time.perf_counter() - t0) * 1e3 / inner)
        events.record(end)
        events.release()
        gpu.append(events.elapsed_ms(start, end) / inner)
    if events.watchdog_fired:
        raise RuntimeError("a call waited on the GPU while the stream was held: no GPU-only timing")
    mhz = SM_CLOCK.mean_mhz(begin, time.time()) if SM_CLOCK else float("nan")
    for _ in range(max(reps // 3, 3)):
        events.record(start)
        for _ in range(inner):
            fn()
        events.record(end)
        call.append(events.elapsed_ms(start, end) / inner)
    return Timing(float(np.median(gpu)), float(np.median(call)), float(np.median(host)), mhz)


CEILING_SCRIPT = r"""
import json, sys, time, torch
windows = {}  # what was timed -> its wall-clock window, for the SM clock over it
sustain_s = float(sys.argv[2])
def warm(fn):  # three calls, then back to back for sustain_s seconds (bench.py --sustain)
    for _ in range(3): fn()
    torch.cuda.synchronize()
    until = time.time() + sustain_s
    while time.time() < until:
        for _ in range(5): fn()
        torch.cuda.synchronize()
x = torch.randn(2 * 1024**3 // 4, device="cuda")  # 2 GiB
y = torch.empty_like(x)
warm(lambda: y.copy_(x))
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
ts = []; t0 = time.time()
for _ in range(20):
    s.record(); y.copy_(x); e.record(); e.synchronize(); ts.append(s.elapsed_time(e))
windows["copy"] = (t0, time.time())
ts.sort(); ms = ts[len(ts) // 2]
copy = 2 * x.numel() * 4 / (ms * 1e-3) / 1e9
del x, y
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
warm(lambda: a @ b)
ts = []; t0 = time.time()
for _ in range(10):
    s.record(); a @ b; e.record(); e.synchronize(); ts.append(s.elapsed_time(e))
windows["bf16 matmul"] = (t0, time.time())
ts.sort(); bf16 = 2 * 8192**3 / (ts[len(ts) // 2] * 1e-3) / 1e12
fp8 = float("nan")
try:
    a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
    one = torch.ones((), device="cuda")
    mm = lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    warm(mm)
    ts = []; t0 = time.time()
    for _ in range(10):
        s.record(); mm(); e.record(); e.synchronize(); ts.append(s.elapsed_time(e))
    windows["fp8 matmul"] = (t0, time.time())
    ts.sort(); fp8 = 2 * 8192**3 / (ts[len(ts) // 2] * 1e-3) / 1e12
except Exception:
    pass
del a, b
# The best bf16 attention torch has here, causal, causal FLOPs counted as half: at the prefill
# benchmark's shape (8 x 4096, 32 q / 8 kv heads, head_dim 128) per backend, and the best backend
# at each head layout given in argv (seqs, length, q heads, kv heads, head_dim), keyed "hq/hkv/D".
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
def sdpa_rates(seqs, length, hq, hkv, dim):
    q = torch.randn(seqs, hq, length, dim, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(seqs, hkv, length, dim, device="cuda", dtype=torch.bfloat16); v = torch.randn_like(k)
    k, v = k.repeat_interleave(hq // hkv, dim=1), v.repeat_interleave(hq // hkv, dim=1)
    flops = 4 * seqs * hq * length * length * dim / 2
    rates = {}
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                warm(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
                ts = []; t0 = time.time()
                for _ in range(10):
                    s.record(); F.scaled_dot_product_attention(q, k, v, is_causal=True); e.record(); e.synchronize()
                    ts.append(s.elapsed_time(e))
                windows[f"sdpa {hq}/{hkv}/{dim} {name}"] = (t0, time.time())
            ts.sort(); rates[name] = flops / (ts[len(ts) // 2] * 1e-3) / 1e12
        except Exception:
            pass
    return rates
sdpa = sdpa_rates(8, 4096, 32, 8, 128)
by_layout = {}
for seqs, length, hq, hkv, dim in json.loads(sys.argv[1]):
    rates = sdpa_rates(seqs, length, hq, hkv, dim)
    if rates: by_layout[f"{hq}/{hkv}/{dim}"] = max(rates.values())
print(json.dumps({"copy_GBps": copy, "bf16_matmul_TFLOPs": bf16, "fp8_matmul_TFLOPs": fp8,
                  "sdpa_bf16_TFLOPs": sdpa, "sdpa_bf16_by_layout": by_layout, "windows": windows,
                  "device": torch.cuda.get_device_name()}))
"""


def measure_ceilings():
    """Copy bandwidth and matmul rate through torch in a separate process (torch is only a
    yardstick here, never a dependency of fastattn)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        layouts = [(*HEAD_LAYOUT_PREFILL, hq, hkv, dim) for hq, hkv, dim in HEAD_LAYOUTS]
        out = subprocess.run([sys.executable, "-c", CEILING_SCRIPT, json.dumps(layouts), str(SUSTAIN_S)],
                             capture_output=True, text=True, env=env, timeout=300 + 20 * SUSTAIN_S)
        ceilings = json.loads(out.stdout.strip().splitlines()[-1])
        windows = ceilings.pop("windows", {})
        ceilings["sm_mhz"] = {what: SM_CLOCK.mean_mhz(*window) for what, window in windows.items()} if SM_CLOCK else {}
        return ceilings
    except (subprocess.SubprocessError, ValueError, IndexError, OSError) as err:
        print(f"warning: no torch ceiling ({err}); copy bandwidth unknown", file=sys.stderr)
        return {"copy_GBps": float("nan"), "bf16_matmul_TFLOPs": float("nan"), "fp8_matmul_TFLOPs": float("nan"),
                "sdpa_bf16_TFLOPs": {}, "device": "?"}


# ---------------------------------------------------------------------------------------------
# paged KV cache


def random_gpu(rng, shape, dtype="bfloat16", scale=1.0):
    """A GPU tensor of normal values times `scale`, tiled from a 16M-element random block (drawing
    gigabytes at random is slow); bf16 goes over as bit patterns, with no float32 copy of it."""
    count = int(np.prod(shape))
    block = rng.standard_normal(min(count, 1 << 24), dtype=np.float32) * np.float32(scale)
    if dtype == "bfloat16":
        block = (block.view(np.uint32) >> 16).astype(np.uint16)
    return from_numpy(np.resize(block, count).reshape(shape), dtype, "gpu")


def paged_setup(rng, batch, tokens_per_seq, heads, head_dim, block_size, quant):
    """Caches sized for `batch` x `tokens_per_seq`, blocks shuffled; all on the GPU."""
    blocks_per_seq = -(-tokens_per_seq // block_size)
    num_blocks = batch * blocks_per_seq
    tables = rng.permutation(num_blocks).astype(np.int32).reshape(batch, blocks_per_seq)
    shape = (num_blocks, heads, block_size, head_dim)
    if quant == "none":
        cache = [from_numpy(rng.integers(0, 1 << 14, shape, dtype=np.uint16), "bfloat16", "gpu") for _ in range(2)]
    else:
        cache = [from_numpy(rng.integers(0, 0x70, shape, dtype=np.uint8), "uint8", "gpu") for _ in range(2)]
    scales = []
    if quant == "block_wise_fp8":
        scales = [from_numpy(rng.uniform(0.01, 0.02, shape[:3]).astype(np.float32), "float32", "gpu")
                  for _ in range(2)]
    elif quant != "none":
        scales = [from_numpy(np.full(heads, 2.0, np.float32), "float32", "gpu") for _ in range(2)]
    return from_numpy(tables, None, "gpu"), cache, scales


def cache_row_bytes(quant, head_dim):
    """Bytes of one cached (token, head) row of K or V, its scale included."""
    return head_dim * (2 if quant == "none" else 1) + (4 if quant == "block_wise_fp8" else 0)


# The cache ops' benchmark shape: 32768 tokens (16 sequences x 2048) x 8 kv heads x 128, block 64.
CACHE_BATCH, CACHE_PER_SEQ, CACHE_HEADS, CACHE_DIM, CACHE_BLOCK = 16, 2048, 8, 128, 64
CACHE_TOKENS = CACHE_BATCH * CACHE_PER_SEQ


def timing_fields(t):
    return dict(us=t.gpu_ms * 1e3, call_us=t.call_ms * 1e3, host_us=t.host_ms * 1e3, sm_mhz=t.sm_mhz)


def cache_op_row(op, quant, timing):
    """A result row of a cache op: it reads or writes each 16-bit K/V row once and each cached row
    (scale included) once."""
    moved = 2 * CACHE_TOKENS * CACHE_HEADS * (CACHE_DIM * 2 + cache_row_bytes(quant, CACHE_DIM))
    return dict(op=op, shape=f"{CACHE_TOKENS} tok x {CACHE_HEADS} h x {CACHE_DIM}, bs {CACHE_BLOCK}",
                variant=quant, bytes=moved, **timing_fields(timing))


@case("write_cache_kv")
def bench_write(rng, args):
    rows = []
    for quant in ref.QUANT_TYPES:
        tables, cache, scales = paged_setup(rng, CACHE_BATCH, CACHE_PER_SEQ, CACHE_HEADS, CACHE_DIM, CACHE_BLOCK,
                                            quant)
        k, v = (random_gpu(rng, (CACHE_TOKENS, CACHE_HEADS, CACHE_DIM)) for _ in range(2))
        cu = from_numpy(np.arange(0, CACHE_TOKENS + 1, CACHE_PER_SEQ, dtype=np.int32), None, "gpu")
        dec = from_numpy(np.zeros(CACHE_BATCH, np.int32), None, "gpu")
        ops = ops_module()
        if quant == "block_wise_fp8":
            fn = lambda: ops.fastattn_write_cache_kv_dynamic(k, v, *cache, *scales, tables, cu, dec)
        else:
            ks, vs = scales or (None, None)
            fn = lambda: ops.fastattn_write_cache_kv(k, v, *cache, tables, cu, dec, ks, vs, quant)
        rows.append(cache_op_row("write_cache_kv", quant, time_gpu(fn, reps=args.reps)))
    return rows


@case("append_cache_kv_c8")
def bench_append(rng, args):
    rows = []
    for quant in ref.QUANT_TYPES:
        tables, cache, scales = paged_setup(rng, CACHE_BATCH, CACHE_PER_SEQ, CACHE_HEADS, CACHE_DIM, CACHE_BLOCK,
                                            quant)
        out = [random_gpu(rng, (CACHE_TOKENS, CACHE_HEADS, CACHE_DIM)) for _ in range(2)]
        this_time = from_numpy(np.ones(CACHE_BATCH, np.int32), None, "gpu")
        dec = from_numpy(np.full(CACHE_BATCH, CACHE_PER_SEQ, np.int32), None, "gpu")
        cu = from_numpy(np.arange(0, CACHE_TOKENS + 1, CACHE_PER_SEQ, dtype=np.int32), None, "gpu")
        ks, vs = scales or (None, None)
        ops = ops_module()
        fn = lambda: ops.fastattn_append_cache_kv_c8(*cache, *out, tables, this_time, dec, cu, ks, vs, quant)
        rows.append(cache_op_row("append_cache_kv_c8", quant, time_gpu(fn, reps=args.reps)))
    return rows


# ---------------------------------------------------------------------------------------------
# merge_attn_states and the quantizers


@case("merge_attn_states")
def bench_merge(rng, args):
    rows = []
    ops = ops_module()
    scale = from_numpy(np.float32([0.01]), "float32", "gpu")
    fp8 = "float8_e4m3fn" if getattr(paddle, "float8_e4m3fn", None) is not None else "uint8"
    for tokens, heads in ((1024, 32), (1024, 128), (4096, 32), (4096, 128), (16384, 32), (16384, 128)):
        dim = 128
        a, b = random_gpu(rng, (tokens, heads, dim)), random_gpu(rng, (tokens, heads, dim))
        la, lb = (random_gpu(rng, (heads, tokens), "float32", 3.0) for _ in range(2))
        fused = lambda: ops.fastattn_merge_attn_states(a, la, b, lb, scale, fp8)
        two_step = lambda: ops.fastattn_quantize_fp8(ops.fastattn_merge_attn_states(a, la, b, lb, None, "")[0],
                                                     scale, fp8)
        fused_t = time_gpu(fused, reps=args.reps)
        two_t = time_gpu(two_step, reps=args.reps)
        ms, ms_two = fused_t.gpu_ms, two_t.gpu_ms
        elements = tokens * heads * dim
        moved = 2 * elements * 2 + elements + 3 * tokens * heads * 4
        rows.append(dict(op="merge_attn_states", shape=f"T {tokens} x H {heads} x D {dim}, bf16 in",
                         variant=f"fp8 out (unfused {ms_two * 1e3:.1f} us, {ms_two / ms:.2f}x)",
                         bytes=moved, unfused_us=ms_two * 1e3, unfused_call_us=two_t.call_ms * 1e3,
                         **timing_fields(fused_t)))
    return rows


@case("quant_mxfp4")
def bench_mxfp4(rng, args):
    elements = 64 * 1024 * 1024
    x = random_gpu(rng, (elements // 4096, 4096))
    ops = ops_module()
    timing = time_gpu(lambda: ops.fastattn_quant_mxfp4(x), reps=args.reps)
    moved = elements * 2 + elements // 2 + elements // 32
    return [dict(op="quant_mxfp4", shape="64M elements (16384 x 4096)", variant="bf16 in", bytes=moved,
                 **timing_fields(timing))]


# ---------------------------------------------------------------------------------------------
# attention


def random_bytes_gpu(rng, shape, high=0x70):
    """A GPU tensor of random bytes in [0, high) (finite e4m3 codes), tiled from a 16 MiB random
    block: the contents only need to be finite, and drawing gigabytes at random is slow."""
    count = int(np.prod(shape))
    block = rng.integers(0, high, min(count, 1 << 24), dtype=np.uint8)
    return from_numpy(np.resize(block, count).reshape(shape), "uint8", "gpu")


def quantized_normal_gpu(rng, shape):
    """FP8 (e4m3) codes of normal values as a per-tensor quantizer makes them (amax -> 448), tiled
    from a 4M-element random block, and the descale that turns the codes back into the values."""
    count = int(np.prod(shape))
    block = rng.standard_normal(min(count, 1 << 22), dtype=np.float32)
    descale, multiplier = ref.dynamic_scale(np.abs(block).max())
    codes = ref.float_to_e4m3(block * multiplier)
    return from_numpy(np.resize(codes, count).reshape(shape), "uint8", "gpu"), descale


# (batch, keys per sequence); the last: the per-call overhead
DECODE_SHAPES = ((64, 32768), (256, 32768), (64, 8192), (256, 8192), (8, 1024), (1, 64))
DECODE_HQ, DECODE_HKV, DECODE_DIM, DECODE_BLOCK = 32, 8, 128, 64
# Head layouts (q heads, kv heads, head_dim) measured beside the 32 / 8 / 128 one above: other
# head dims and GQA ratios should reach about the same fraction of their ceiling.
HEAD_LAYOUTS = ((32, 8, 64), (32, 8, 256), (32, 32, 128))
HEAD_LAYOUT_DECODE = (64, 8192)
HEAD_LAYOUT_PREFILL = (8, 4096)


def decode_rows(rng, args, batch, keys, hq, hkv, dim, quants):
    """paged_attention with one query per sequence over a full cache, per quant type; judged by
    the cache bytes read (K, V, scales)."""
    rows = []
    ops = ops_module()
    blocks = batch * keys // DECODE_BLOCK
    tables = from_numpy(rng.permutation(blocks).astype(np.int32).reshape(batch, -1), None, "gpu")
    shape = (blocks, hkv, DECODE_BLOCK, dim)
    q = random_gpu(rng, (batch, hq, dim))
    lens = from_numpy(np.full(batch, keys, np.int32), None, "gpu")
    cu = from_numpy(np.arange(batch + 1, dtype=np.int32), None, "gpu")
    shape_name = f"batch {batch} x {keys} keys, {hq}/{hkv} heads, D {dim}, bs {DECODE_BLOCK}"
    for quant in quants:
        if quant == "none":
            cache = [random_gpu(rng, shape) for _ in range(2)]
        else:
            cache = [random_bytes_gpu(rng, shape) for _ in range(2)]
        if quant == "block_wise_fp8":
            scales = [from_numpy(rng.uniform(0.01, 0.02, shape[:3]).astype(np.float32), "float32", "gpu")
                      for _ in range(2)]
        elif quant == "cache_fp8":
            scales = [from_numpy(np.full(hkv, 0.02, np.float32), "float32", "gpu") for _ in range(2)]
        else:
            scales = [None, None]
        call = (q, *cache, tables, lens, cu, *scales, None, None, quant, dim ** -0.5, True, "bfloat16", 0, False, 0, -1)
        read = 2 * batch * keys * hkv * cache_row_bytes(quant, dim)
        timing = time_gpu(lambda: ops.fastattn_paged_attention(*call), reps=args.reps)
        rows.append(dict(op="paged_attention decode", variant=quant, bytes=read, **timing_fields(timing),
                         shape=shape_name))
        if batch * keys <= 8 * 1024 and fast_module() is not None:  # the host cost of a call, fast path
            timing = time_gpu(lambda: fast_module().paged_attention(*call), reps=args.reps)
            rows.append(dict(op="paged_attention decode", variant=f"{quant}, dygraph fast path", bytes=read,
                             shape=shape_name, **timing_fields(timing)))
        del cache, scales
    return rows


@case("paged_decode")
def bench_paged_decode(rng, args):
    rows = []
    for batch, keys in DECODE_SHAPES:
        # A bf16 cache beyond 64 x 32768 (8.6 GB) adds little: the ratio shows at the smaller shapes.
        quants = ("cache_fp8", "block_wise_fp8") + (("none",) if batch * keys <= 64 * 32768 else ())
        rows += decode_rows(rng, args, batch, keys, DECODE_HQ, DECODE_HKV, DECODE_DIM, quants)
    return rows


PREFILL_SHAPES = ((8, 4096), (1, 16384))  # (sequences, tokens each), causal
PREFILL_HQ, PREFILL_HKV, PREFILL_DIM, PREFILL_BLOCK = 32, 8, 128, 64
PREFILL_VARIANTS = ("fp8 q/k/v", "bf16 q, fp8 k/v", "bf16", "fp8 q, paged cache_fp8", "bf16 q, paged cache_fp8",
                    "fp8 q, paged block_wise_fp8", "bf16 q, paged block_wise_fp8", "fp8 q/k/v, fp8_pv",
                    "fp8 q, paged cache_fp8, fp8_pv", "fp8 q, paged block_wise_fp8, fp8_pv")


def prefill_row(rng, args, seqs, length, hq, hkv, dim, variant, block_size=PREFILL_BLOCK):
    """Causal prefill: flash_attn_varlen with FP8 q/k/v, bf16 q over FP8 k/v or bf16; or
    paged_attention with FP8 or bf16 q over a cache_fp8 or block_wise_fp8 cache of `block_size`-key
    blocks (the whole sequence as one chunk, max_seqlen_kv given, as a server that knows its
    longest sequence would); ", fp8_pv" at the end: with the op's fp8_pv. The
    inputs are normal values (FP8: quantized with a per-tensor scale, times a per-token factor in
    [0.5, 1) for block_wise_fp8), as in the bf16 ceiling's run: the tensor cores' work and the
    softmax's (how spread P is, how often a row's max moves) depend on them."""
    ops = ops_module()
    scalar = lambda x: from_numpy(np.array([x], np.float32), "float32", "gpu")
    tokens = seqs * length
    cu = from_numpy(np.arange(0, tokens + 1, length, dtype=np.int32), None, "gpu")
    flops = 4 * seqs * hq * length * length * dim / 2
    fp8_q, fp8_kv = variant.startswith("fp8 q"), variant != "bf16"
    fp8_pv = variant.endswith(", fp8_pv")
    if fp8_q:
        q, q_descale = quantized_normal_gpu(rng, (tokens, hq, dim))
        q_descale = scalar(q_descale)
    else:
        q, q_descale = random_gpu(rng, (tokens, hq, dim)), None
    if "paged " in variant:
        quant = variant.split("paged ")[1].split(",")[0]
        blocks = tokens // block_size
        tables = from_numpy(rng.permutation(blocks).astype(np.int32).reshape(seqs, -1), None, "gpu")
        cache, scales = zip(*(quantized_normal_gpu(rng, (blocks, hkv, block_size, dim)) for _ in range(2)))
        if quant == "block_wise_fp8":  # per-token scale tables [blocks, kv heads, block_size]
            scales = [s * rng.uniform(0.5, 1.0, (blocks, hkv, block_size)).astype(np.float32) for s in scales]
        else:
            scales = [np.full(hkv, s, np.float32) for s in scales]
        scales = [from_numpy(s, "float32", "gpu") for s in scales]
        lens = from_numpy(np.full(seqs, length, np.int32), None, "gpu")
        fn = lambda: ops.fastattn_paged_attention(q, *cache, tables, lens, cu, *scales, q_descale, None,
                                                  quant, dim ** -0.5, True, "bfloat16", 0, fp8_pv, length, -1)
    else:
        if fp8_kv:
            kv, kv_descales = zip(*(quantized_normal_gpu(rng, (tokens, hkv, dim)) for _ in range(2)))
            kv_descales = [scalar(s) for s in kv_descales]
        else:
            kv, kv_descales = [random_gpu(rng, (tokens, hkv, dim)) for _ in range(2)], [None, None]
        descales = (q_descale, *kv_descales)
        fn = lambda: ops.fastattn_flash_attn_varlen(q, *kv, cu, cu, *descales, dim ** -0.5, True,
                                                    "bfloat16", length, 0, fp8_pv)
    timing = time_gpu(fn, reps=max(args.reps // 3, 5), inner=3)
    # The tensor cores' formats (report's tensor floor): Q K^T in FP8 with an FP8 q, else in fp16
    # (K widened); P V in e4m3 where fp8_pv applies (FP8 q, head_dim 64 and 128), else in fp16.
    formats = ("fp8" if fp8_q else "bf16", "fp8" if fp8_pv and fp8_q and dim <= 128 else "bf16")
    op = "paged_attention prefill" if "paged" in variant else "flash_attn_varlen prefill"
    blocks_note = f", bs {block_size}" if "paged" in variant and block_size != PREFILL_BLOCK else ""
    return dict(op=op, shape=f"{seqs} x {length} causal, {hq}/{hkv} heads, D {dim}{blocks_note}", variant=variant,
                layout=f"{hq}/{hkv}/{dim}", flops=flops, tensor_formats=formats, **timing_fields(timing))


@case("prefill")
def bench_prefill(rng, args):
    return [prefill_row(rng, args, seqs, length, PREFILL_HQ, PREFILL_HKV, PREFILL_DIM, variant)
            for seqs, length in PREFILL_SHAPES for variant in PREFILL_VARIANTS]


# Cache block sizes beside the prefill case's 64: 16 is vLLM's and FlashInfer's usual page size. A
# tile of 128 keys then spans 8 blocks, each K and V block a tensor copy of its own.
BLOCK_SIZES = (16, 32, 128)
BLOCK_SIZE_VARIANTS = ("fp8 q, paged cache_fp8", "fp8 q, paged block_wise_fp8", "bf16 q, paged cache_fp8")


@case("block_sizes")
def bench_block_sizes(rng, args):
    return [prefill_row(rng, args, *PREFILL_SHAPES[0], PREFILL_HQ, PREFILL_HKV, PREFILL_DIM, variant, block_size)
            for block_size in BLOCK_SIZES for variant in BLOCK_SIZE_VARIANTS]


@case("head_layouts")
def bench_head_layouts(rng, args):
    """FP8 decode and prefill at the other head dims and GQA ratios (HEAD_LAYOUTS): the prefill
    with FP8 q/k/v (also with fp8_pv where the kernel takes it: head_dim 64 and 128), and as a
    server runs it, bf16 q over a cache_fp8 and a block_wise_fp8 cache."""
    rows = []
    for hq, hkv, dim in HEAD_LAYOUTS:
        rows += decode_rows(rng, args, *HEAD_LAYOUT_DECODE, hq, hkv, dim, ("cache_fp8",))
        variants = ("fp8 q/k/v",) + (("fp8 q/k/v, fp8_pv",) if dim <= 128 else ())
        variants += ("bf16 q, paged cache_fp8", "bf16 q, paged block_wise_fp8")
        rows += [prefill_row(rng, args, *HEAD_LAYOUT_PREFILL, hq, hkv, dim, variant) for variant in variants]
    return rows


# A server's mixed step (the backends' "paged" path): one sequence's chunk of new tokens after its
# cached prefix beside decodes (one query each), in one paged_attention call with a bf16 q, as the
# backends call it (max_seqlen_kv and max_multi_token_seqs given) and without those bounds.
# (decodes, their keys, chunk tokens, prefix). The third averages 12 rows a sequence (at a group of
# 4), where the plan gives the whole batch, the chunk too, to the decode kernel.
MIXED_SHAPES = ((64, 8192, 2048, 6144), (16, 4096, 4096, 0), (256, 2048, 512, 1536))
MIXED_QUANTS = ("cache_fp8", "block_wise_fp8")
MIXED_DIMS = (128, 256)


def mixed_rows(rng, args, decodes, decode_keys, chunk, prefix, hq, hkv, dim, quant):
    """One mixed call, and its two parts each alone as a server that split them would run them:
    the chunk with max_seqlen_kv (TFLOP/s, causal bottom-right) and the decodes (GB/s of their
    cache). The mixed call's time against the parts' sum is what mixing costs."""
    ops = ops_module()
    per_block = PREFILL_BLOCK
    chunk_blocks, decode_blocks = -(-(prefix + chunk) // per_block), -(-decode_keys // per_block)
    blocks = chunk_blocks + decodes * decode_blocks
    order = rng.permutation(blocks).astype(np.int32)
    width = max(chunk_blocks, decode_blocks)
    tables = np.zeros((1 + decodes, width), np.int32)  # (columns past a sequence's blocks are never read)
    tables[0, :chunk_blocks] = order[:chunk_blocks]
    tables[1:, :decode_blocks] = order[chunk_blocks:].reshape(decodes, decode_blocks)
    cache, scales = zip(*(quantized_normal_gpu(rng, (blocks, hkv, per_block, dim)) for _ in range(2)))
    if quant == "block_wise_fp8":
        scales = [s * rng.uniform(0.5, 1.0, (blocks, hkv, per_block)).astype(np.float32) for s in scales]
    else:
        scales = [np.full(hkv, s, np.float32) for s in scales]
    scales = [from_numpy(s, "float32", "gpu") for s in scales]
    lens = np.array([prefix + chunk] + [decode_keys] * decodes, np.int32)
    cu = np.concatenate([[0], chunk + np.arange(decodes + 1)]).astype(np.int32)
    gpu = lambda a, dtype=None: from_numpy(np.ascontiguousarray(a), dtype, "gpu")

    def call(seqs, cu_q, bounded):  # (q: fresh normal values for the sequences' queries)
        bounds = (int(lens[seqs].max()), int(np.count_nonzero(np.diff(cu_q) > 1))) if bounded else (0, -1)
        args_ = (random_gpu(rng, (int(cu_q[-1]), hq, dim)), *cache, gpu(tables[seqs]), gpu(lens[seqs]), gpu(cu_q),
                 *scales, None, None, quant, dim ** -0.5, True, "bfloat16", 0, False, *bounds)
        return time_gpu(lambda: ops.fastattn_paged_attention(*args_), reps=max(args.reps // 3, 5), inner=3)

    shape = (f"{decodes} decodes x {decode_keys} keys + a {chunk}-token chunk after {prefix}, {hq}/{hkv} heads, "
             f"D {dim}")
    chunk_flops = 4 * hq * dim * chunk * (prefix + (chunk + 1) / 2)
    decode_bytes = 2 * decodes * decode_keys * hkv * cache_row_bytes(quant, dim)
    rows = [dict(op="paged_attention mixed", variant=f"bf16 q, {quant}: one call", shape=shape,
                 **timing_fields(call(slice(None), cu, True))),
            dict(op="paged_attention mixed", variant=f"bf16 q, {quant}: one call without bounds", shape=shape,
                 **timing_fields(call(slice(None), cu, False)))]
    rows.append(dict(op="paged_attention mixed", variant=f"bf16 q, {quant}: the chunk alone", shape=shape,
                     flops=chunk_flops, layout=f"{hq}/{hkv}/{dim}",
                     **timing_fields(call(slice(0, 1), cu[:2], True))))
    rows.append(dict(op="paged_attention mixed", variant=f"bf16 q, {quant}: the decodes alone", shape=shape,
                     bytes=decode_bytes,
                     **timing_fields(call(slice(1, None), cu[1:] - chunk, False))))
    return rows


@case("mixed")
def bench_mixed(rng, args):
    return [row for dim in MIXED_DIMS for shape in MIXED_SHAPES for quant in MIXED_QUANTS
            for row in mixed_rows(rng, args, *shape, PREFILL_HQ, PREFILL_HKV, dim, quant)]


# ---------------------------------------------------------------------------------------------


def report(rows, ceilings, out_dir):
    copy = ceilings["copy_GBps"]
    sdpa = ceilings.get("sdpa_bf16_TFLOPs") or {}
    best_sdpa = max(sdpa.values()) if sdpa else float("nan")
    sdpa_by_layout = ceilings.get("sdpa_bf16_by_layout") or {}
    none_us = {(r["op"], r["shape"]): r["us"] for r in rows if r["variant"] == "none"}
    for r in rows:
        if (r["op"], r["shape"]) in none_us and r["variant"] != "none":
            r["x_faster_than_none"] = none_us[(r["op"], r["shape"])] / r["us"]
        if "bytes" in r:
            r["GBps"] = r["bytes"] / (r["us"] * 1e-6) / 1e9
            r["pct_of_copy"] = 100.0 * r["GBps"] / copy
        if "flops" in r:
            r["TFLOPs"] = r["flops"] / (r["us"] * 1e-6) / 1e12
            r["vs_best_sdpa_bf16"] = r["TFLOPs"] / sdpa_by_layout.get(r.get("layout"), best_sdpa)
        if "tensor_formats" in r:  # half the FLOPs in each product, at the matmul rate of its format
            rates = [ceilings.get(f"{f}_matmul_TFLOPs", float("nan")) for f in r["tensor_formats"]]
            floor_us = sum(r["flops"] / 2 / (rate * 1e12) for rate in rates) * 1e6
            r["pct_of_tensor_floor"] = 100.0 * floor_us / r["us"]
    lines = [f"device: {ceilings['device']}; copy bandwidth {copy:.0f} GB/s, bf16 matmul "
             f"{ceilings['bf16_matmul_TFLOPs']:.0f} TFLOP/s, fp8 matmul {ceilings.get('fp8_matmul_TFLOPs', float('nan')):.0f}"
             f" TFLOP/s, torch SDPA bf16 at the prefill shape: "
             + (", ".join(f"{k} {v:.0f}" for k, v in sdpa.items()) or "n/a")
             + " TFLOP/s; best SDPA bf16 at 8 x 4096 with q/kv heads/head_dim "
             + (", ".join(f"{k}: {v:.0f}" for k, v in sdpa_by_layout.items()) or "n/a")
             + " TFLOP/s (all measured in this run, through torch)",
             "SM clock (MHz, mean while timed) of the ceilings: "
             + (", ".join(f"{k} {v:.0f}" for k, v in (ceilings.get("sm_mhz") or {}).items()) or "n/a"), "",
             "µs: GPU time per call (calls queued back to back); per call: a plain dygraph loop, host-bound "
             "where issuing a call (host µs) takes longer than its kernels. GB/s and TFLOP/s from the GPU time; "
             "% of ceiling: of the copy bandwidth on the bytes an op must move, or for attention prefill of "
             "the tensor cores' time (half the FLOPs in Q K^T, half in P V, each at the measured matmul rate "
             "of the format the kernel uses: fp8 with an FP8 q and with fp8_pv, else bf16); "
             "x best SDPA bf16: TFLOP/s over the best torch bf16 SDPA with the same heads and head_dim; "
             "x none cache: the same shape's GPU time with a bf16 cache over this one's; SM MHz: the mean "
             "SM clock while the row was timed.", "",
             "| op | shape | variant | µs | per call µs | host µs | GB/s | % of ceiling | TFLOP/s | x best SDPA bf16 | x none cache | SM MHz |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for r in rows:
        lines.append(f"| {r['op']} | {r['shape']} | {r['variant']} | {r['us']:.1f} | {r['call_us']:.1f} | "
                     f"{r['host_us']:.1f} | "
                     f"{r.get('GBps', nan):.0f} | {r.get('pct_of_copy', r.get('pct_of_tensor_floor', nan)):.0f}% | "
                     f"{r.get('TFLOPs', nan):.0f} | "
                     f"{r.get('vs_best_sdpa_bf16', nan):.2f} | {r.get('x_faster_than_none', nan):.2f} | "
                     f"{r.get('sm_mhz', nan):.0f} |")
    table = "\n".join(lines)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out_dir, "bench.json"), "w") as f:
        json.dump({"ceilings": ceilings, "rows": rows, "time": time.strftime("%Y-%m-%d %H:%M:%S")}, f, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        labels = [f"{r['op']}\n{r['variant']}" for r in rows if "pct_of_copy" in r]
        values = [r["pct_of_copy"] for r in rows if "pct_of_copy" in r]
        fig, ax = plt.subplots(figsize=(max(6, len(values) * 0.9), 4))
        ax.bar(range(len(values)), values)
        ax.axhline(100, color="gray", lw=0.8)
        ax.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("% of copy bandwidth")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "bench.png"), dpi=120)
    except Exception as err:  # the plot is a convenience; the table and JSON are the record
        print(f"note: no plot ({type(err).__name__}: {err})")
    print(table)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="cases to run (default: all)")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--sustain", type=float, default=0.0, metavar="S",
                        help="seconds of back-to-back calls before each timing (the GPU's steady, power-capped clock)")
    args = parser.parse_args()
    if not (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        sys.exit("bench.py needs a CUDA GPU visible to Paddle")
    paddle.set_device("gpu")
    global SM_CLOCK, SUSTAIN_S
    SM_CLOCK = SmClockLog()
    SUSTAIN_S = args.sustain
    ceilings = measure_ceilings()
    rng = np.random.default_rng(0)
    rows = []
    for name in args.only or sorted(CASES):
        rows += CASES[name](rng, args)
    report(rows, ceilings, args.out)


if __name__ == "__main__":
    main()
