"""A small decoder-only transformer served with continuous batching through fastattn.backends, once
per KV-cache type, each run compared against the bf16 cache ("none").

    python -m fastattn.demo [--device cpu|gpu] [--requests N] [--layers L] ... (--help lists all)

The server: requests arrive over time; each prompt is one of a few shared prefixes (a system
prompt) followed by its own text. A prefix cache keyed on full blocks of prompt tokens lets later
requests reuse the blocks of a shared prefix (prefix-cache hits). Every step runs one token for
each generating request and fills a token budget with prompt chunks, so steps mix decodes, fresh
prefills, chunks after a prefix that ends mid-block, and idle slots; finished requests free their
blocks. The model: pre-norm layers with RoPE attention over grouped KV heads and a SiLU MLP,
seeded random weights (nothing is downloaded), greedy decoding.

All cache types run in lockstep on one schedule. The bf16-cache run picks every next token and
the others are fed the same tokens, so each token's attention output can be compared with the
bf16 run's in every layer; "next tokens agree" counts how often a run's own greedy choice matches.
Static scales (cache_int8, cache_fp8) are calibrated on four other prompts served with the bf16
cache first, as a server would calibrate offline.

Only attention runs through fastattn: each layer's q/k/v go to the device, forward_mixed writes the
cache and attends there, the output comes back. Embeddings, projections, norms, RoPE, the MLP and
sampling are numpy float32 on the host, because Paddle 2.6's GPU build has no kernels for Hopper
GPUs. The tokens/s figures therefore include that host work and the copies: they compare cache
types under one workload, they are not a serving benchmark. Prefill tokens/s counts the steps that
ran prompt tokens (with the decode tokens riding along); decode tokens/s the decode-only steps.

The exit status is 1 when an accuracy bound is violated. The bounds (listed at the end of --help)
are on the relative error ||o - o_bf16|| / ||o_bf16|| of each token's attention output against the
bf16-cache run: on its mean over the tokens of every layer, per cache type, and on every token's.
"""
import argparse
import sys
import time
import types
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import List

import numpy as np

from . import cache
from . import reference as ref
from .backends import FlashAttentionBackend, ForwardMeta
from .backends.flash_attn import PREFILL_PATHS
from .tensors import from_numpy, gpu_available, to_numpy

REFERENCE = "none"
# Bounds on the mean per-token error of each layer. e4m3 keeps 4 significant bits: a relative
# rounding error of up to 1/16, rms about 2.6% per element, in every key (perturbing the scores)
# and every value; int8 with a per-head scale steps by 1.25 absmax/127 (see CALIBRATION_HEADROOM).
# Measured means, at the CPU defaults (seeds 0-4) and at the test's tiny sizes (40 seeds): 4.8-5.9%
# for the fp8 types, 1.8-2.7% for int8, alike in every layer.
MEAN_ERROR_BOUNDS = {"cache_int8": 0.04, "cache_fp8": 0.08, "block_wise_fp8": 0.08}
# Any single token: measured tails reach 0.13 (a query that averages many values has a small output
# to be relative to); a token whose keys or values were lost or mis-scaled lands near 1.
MAX_ERROR_BOUND = 0.3
QUERY_GAIN = 2.0  # sharper attention than random projections give, closer to a trained model's
CALIBRATION_PROMPTS = 4
# Static scales map CALIBRATION_HEADROOM x the calibrated absmax to the format's bound, so values a
# little beyond what calibration saw do not saturate. Free for fp8 (its relative precision does not
# depend on the scale); int8 steps grow by the same factor.
CALIBRATION_HEADROOM = 1.25

# flag: (meaning, CPU default, GPU default); the CPU defaults finish in well under a minute on 2 cores
SIZE_FLAGS = {
    "layers": ("decoder layers", 3, 4),
    "heads": ("query heads", 8, 16),
    "kv_heads": ("key/value heads (grouped-query attention)", 2, 4),
    "head_dim": ("64, 128 or 256", 128, 128),
    "block_size": ("tokens per cache block: 16, 32, 64 or 128", 32, 64),
    "vocab": ("vocabulary size", 1024, 4096),
    "requests": ("requests served", 24, 32),
    "prefixes": ("distinct shared prompt prefixes", 3, 4),
    "prefix_len": ("tokens in each shared prefix", 100, 300),
    "suffix_len": ("range of each request's own prompt tokens", (16, 160), (50, 600)),
    "new_tokens": ("tokens generated per request", 24, 48),
    "max_batch": ("batch slots", 8, 16),
    "chunk": ("prompt tokens per step (the prefill budget)", 128, 1024),
    "arrival_gap": ("mean steps between arrivals", 3.0, 2.0),
}


# ----------------------------------------------------------------------------------------------
# The model (numpy, float32)


def rms_norm(x):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(1e-6))


class TinyDecoder:
    def __init__(self, args, rng):
        self.heads, self.kv_heads, self.head_dim = args.heads, args.kv_heads, args.head_dim
        width = args.heads * args.head_dim

        def weight(fan_in, fan_out, gain=1.0):
            return (rng.standard_normal((fan_in, fan_out)) * (gain / np.sqrt(fan_in))).astype(np.float32)

        self.embedding = rng.standard_normal((args.vocab, width)).astype(np.float32)
        kv_width = args.kv_heads * args.head_dim
        self.layers = [dict(q=weight(width, width, QUERY_GAIN), k=weight(width, kv_width), v=weight(width, kv_width),
                            o=weight(width, width), up=weight(width, 2 * width), down=weight(2 * width, width))
                       for _ in range(args.layers)]
        self.unembedding = weight(width, args.vocab)  # untied: tied ones make a random model echo its input
        self.inv_freq = (10000.0 ** (-np.arange(0, args.head_dim, 2) / args.head_dim)).astype(np.float32)

    def rope(self, x, positions):
        angles = positions[:, None].astype(np.float32) * self.inv_freq[None]
        cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
        first, second = np.split(x, 2, axis=-1)
        return np.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)

    def forward(self, tokens, positions, attention, logit_rows):
        """Logits [len(logit_rows), vocab]; attention(layer_id, q, k, v) returns [T, Hq * D]."""
        x = self.embedding[tokens]
        count = len(tokens)
        for layer_id, w in enumerate(self.layers):
            h = rms_norm(x)
            q = self.rope((h @ w["q"]).reshape(count, self.heads, self.head_dim), positions)
            k = self.rope((h @ w["k"]).reshape(count, self.kv_heads, self.head_dim), positions)
            v = (h @ w["v"]).reshape(count, self.kv_heads, self.head_dim)
            x = x + attention(layer_id, q, k, v) @ w["o"]
            h = rms_norm(x)
            up = h @ w["up"]
            x = x + (up / (1 + np.exp(-up))) @ w["down"]
        return rms_norm(x[logit_rows]) @ self.unembedding


# ----------------------------------------------------------------------------------------------
# Requests, blocks, scheduling


@dataclass
class Request:
    prompt: np.ndarray
    new_tokens: int
    arrival: int
    order: int
    blocks: List[int] = field(default_factory=list)
    cached: int = 0  # tokens in the cache
    generated: List[int] = field(default_factory=list)

    @property
    def prompt_done(self):
        return self.cached >= len(self.prompt)


def make_requests(args, rng):
    prefixes = [rng.integers(0, args.vocab, args.prefix_len) for _ in range(args.prefixes)]
    arrival, requests = 0, []
    for i in range(args.requests):
        suffix = rng.integers(0, args.vocab, int(rng.integers(args.suffix_len[0], args.suffix_len[1] + 1)))
        prompt = np.concatenate([prefixes[rng.integers(args.prefixes)], suffix])
        requests.append(Request(prompt, args.new_tokens, arrival, i))
        arrival += int(rng.poisson(args.arrival_gap))
    return requests


class BlockPool:
    """Cache blocks with reference counts, and a prefix cache of full prompt blocks. A block whose
    last user finished goes back to the free pool but keeps its prefix entry until it is handed
    out again, so a later request with the same prefix still finds it (least recently freed first)."""

    def __init__(self, num_blocks, block_size):
        self.block_size = block_size
        self.free = OrderedDict.fromkeys(range(num_blocks))
        self.refs = [0] * num_blocks
        self.block_of, self.key_of = {}, {}

    def cached_prefix(self, prompt):
        """Blocks holding the longest cached full-block prefix of `prompt`, leaving at least one
        prompt token to compute (its logits give the first generated token)."""
        blocks = []
        for i in range((len(prompt) - 1) // self.block_size):
            key = prompt[:(i + 1) * self.block_size].tobytes()
            if key not in self.block_of:
                break
            blocks.append(self.block_of[key])
        return blocks

    def available(self, reusing):
        return len(self.free) - sum(1 for b in reusing if self.refs[b] == 0)

    def acquire(self, blocks):
        for b in blocks:
            if self.refs[b] == 0:
                del self.free[b]
            self.refs[b] += 1

    def allocate(self, count):
        blocks = []
        for _ in range(count):
            b, _ = self.free.popitem(last=False)
            if b in self.key_of:  # evict its prefix entry: it is about to hold other tokens
                del self.block_of[self.key_of.pop(b)]
            self.refs[b] = 1
            blocks.append(b)
        return blocks

    def release(self, blocks):
        for b in blocks:
            self.refs[b] -= 1
            if self.refs[b] == 0:
                self.free[b] = None

    def register(self, prompt, blocks, cached):
        """Enters the request's full prompt blocks written so far into the prefix cache."""
        for i in range(min(cached, len(prompt)) // self.block_size):
            key = prompt[:(i + 1) * self.block_size].tobytes()
            if key not in self.block_of and blocks[i] not in self.key_of:
                self.block_of[key], self.key_of[blocks[i]] = blocks[i], key


@dataclass
class Batch:
    """One step's batch as the server's host-side arrays."""
    encoder: np.ndarray  # seq_lens_encoder, per slot
    decoder: np.ndarray  # seq_lens_decoder
    this_time: np.ndarray  # seq_lens_this_time
    block_tables: np.ndarray
    tokens: np.ndarray
    positions: np.ndarray
    logit_rows: List[int]  # rows whose logits give a next token ...
    logit_slots: List[int]  # ... for these slots

    @property
    def prefill_tokens(self):
        return int(self.encoder.sum())

    @property
    def decode_tokens(self):
        return int(self.this_time.sum()) - self.prefill_tokens


class Scheduler:
    """Continuous batching over `max_batch` slots: admits arrived requests first come first served
    while a slot and blocks for prompt + generation are free (reusing prefix-cache blocks); each
    step decodes one token for every generating request and gives up to `chunk` prompt tokens to
    requests still prefilling, oldest first."""

    def __init__(self, args, requests):
        self.block_size, self.chunk = args.block_size, args.chunk
        self.pool = BlockPool(args.num_blocks, args.block_size)
        self.waiting = deque(requests)
        self.slots = [None] * args.max_batch
        self.block_tables = np.full((args.max_batch, args.max_blocks_per_seq), -1, np.int32)
        self.step = 0
        self.finished = 0
        self.stats = dict(steps=0, mixed_steps=0, prompt_tokens=0, prefix_hit_tokens=0)

    def admit(self):
        while self.waiting and self.waiting[0].arrival <= self.step and None in self.slots:
            request = self.waiting[0]
            hit = self.pool.cached_prefix(request.prompt)
            needed = -(-(len(request.prompt) + request.new_tokens) // self.block_size) - len(hit)
            if self.pool.available(hit) < needed:
                return
            self.pool.acquire(hit)
            request.blocks = hit + self.pool.allocate(needed)
            request.cached = len(hit) * self.block_size
            slot = self.slots.index(None)
            self.slots[slot] = request
            self.block_tables[slot] = -1
            self.block_tables[slot, :len(request.blocks)] = request.blocks
            self.waiting.popleft()
            self.stats["prompt_tokens"] += len(request.prompt)
            self.stats["prefix_hit_tokens"] += request.cached

    def next_batch(self):
        """This step's Batch, or None when every request has finished."""
        self.admit()
        if not any(self.slots):
            if not self.waiting:
                return None
            self.step = max(self.step, self.waiting[0].arrival)  # nothing to run until the next arrival
            self.admit()
        count = len(self.slots)
        encoder, this_time = np.zeros(count, np.int32), np.zeros(count, np.int32)
        budget = self.chunk
        for slot, request in sorted(((s, r) for s, r in enumerate(self.slots) if r), key=lambda sr: sr[1].order):
            if request.prompt_done:
                this_time[slot] = 1
            else:
                this_time[slot] = encoder[slot] = min(len(request.prompt) - request.cached, budget)
                budget -= this_time[slot]
        decoder = np.int32([r.cached if r else 0 for r in self.slots])
        tokens, positions, logit_rows, logit_slots = [], [], [], []
        for slot, request in enumerate(self.slots):
            if not this_time[slot]:
                continue
            start, end = request.cached, request.cached + this_time[slot]
            tokens += list(request.prompt[start:end]) if encoder[slot] else [request.generated[-1]]
            positions += range(start, end)
            if end >= len(request.prompt):
                logit_rows.append(len(tokens) - 1)
                logit_slots.append(slot)
        return Batch(encoder, decoder, this_time, self.block_tables.copy(), np.asarray(tokens),
                     np.asarray(positions), logit_rows, logit_slots)

    def complete(self, batch, next_tokens):
        """Takes the step's results: appends the next tokens, frees finished requests' blocks."""
        for slot, token in zip(batch.logit_slots, next_tokens):
            self.slots[slot].generated.append(int(token))
        for slot, request in enumerate(self.slots):
            if request is None or not batch.this_time[slot]:
                continue
            request.cached += int(batch.this_time[slot])
            self.pool.register(request.prompt, request.blocks, request.cached)
            if len(request.generated) == request.new_tokens:
                self.pool.release(request.blocks)
                self.slots[slot] = None
                self.block_tables[slot] = -1
                self.finished += 1
        self.stats["steps"] += 1
        self.stats["mixed_steps"] += bool(batch.prefill_tokens and batch.decode_tokens)
        self.step += 1


# ----------------------------------------------------------------------------------------------
# One cache type's run


class Runner:
    """One KV-cache type: the caches list, the layers' scales and the backend; runs the model on a
    batch and keeps its statistics."""

    def __init__(self, quant, model, args, absmax=None):
        self.quant, self.model, self.place = quant, model, args.device
        self.caches = cache.allocate_kv_caches(args.layers, args.num_blocks, args.kv_heads, args.block_size,
                                               args.head_dim, quant, "bfloat16", args.device)
        self.layers = [self.make_layer(i, absmax) for i in range(args.layers)]
        self.backend = FlashAttentionBackend(prefill_path=args.prefill_path)
        self.bytes_per_token = args.layers * cache.cache_bytes_per_token(args.kv_heads, args.head_dim, quant)
        self.time = {"prefill": 0.0, "decode": 0.0}
        self.tokens = {"prefill": 0, "decode": 0}
        self.layer_errors = [[] for _ in range(args.layers)]  # per-token relative errors vs the reference
        self.agreed = self.predicted = 0
        self.kv_absmax = np.zeros((args.layers, 2, args.kv_heads), np.float32)  # what calibration reads

    def make_layer(self, layer_id, absmax):
        """The layer object a backend reads; static types take their scales from `absmax`."""
        layer = types.SimpleNamespace(layer_id=layer_id, cache_quant_type_str=self.quant)
        if self.quant in ("cache_int8", "cache_fp8"):
            cache.set_static_scales(layer, absmax[layer_id], self.place)
        return layer

    def forward(self, batch):
        """Runs the model on `batch`, timed; returns (logits, each layer's attention output)."""
        start = time.perf_counter()
        meta = ForwardMeta.build(self.caches, batch.block_tables, batch.encoder, batch.decoder, batch.this_time)
        outputs = []

        def attention(layer_id, q, k, v):
            seen = self.kv_absmax[layer_id]
            seen[:] = np.maximum(seen, [np.abs(x).max(axis=(0, 2), initial=0) for x in (k, v)])
            rows = [from_numpy(ref.to_half_bits(x, "bfloat16"), "bfloat16", self.place) for x in (q, k, v)]
            out = self.backend.forward_mixed(*rows, self.layers[layer_id], meta)
            outputs.append(ref.half_bits_to_float(to_numpy(out), "bfloat16"))
            return outputs[-1]

        logits = self.model.forward(batch.tokens, batch.positions, attention, batch.logit_rows)
        kind = "prefill" if batch.prefill_tokens else "decode"
        self.time[kind] += time.perf_counter() - start
        self.tokens[kind] += batch.prefill_tokens if batch.prefill_tokens else batch.decode_tokens
        return logits, outputs

    def compare(self, logits, outputs, ref_logits, ref_outputs):
        for errors, out, want in zip(self.layer_errors, outputs, ref_outputs):
            errors.append(np.linalg.norm(out - want, axis=1) / np.maximum(np.linalg.norm(want, axis=1), 1e-30))
        self.agreed += int((logits.argmax(-1) == ref_logits.argmax(-1)).sum())
        self.predicted += len(logits)

    def tokens_per_second(self, kind):
        return self.tokens[kind] / self.time[kind] if self.time[kind] else float("nan")

    def error_summary(self):
        """Per layer (max, mean) relative error of a token's attention output."""
        return [(float(np.max(np.concatenate(e))), float(np.mean(np.concatenate(e)))) for e in self.layer_errors]


# ----------------------------------------------------------------------------------------------
# The run and its report


def progress(done, total, step, width=30):
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} requests finished, step {step}")
    sys.stderr.flush()


def serve(args, requests, runners, show_progress=True):
    """Serves `requests` with every runner in lockstep on one schedule; the first runner's greedy
    tokens feed them all and the others are compared with it. Returns the scheduler's stats."""
    scheduler = Scheduler(args, requests)
    while (batch := scheduler.next_batch()) is not None:
        ref_logits, ref_outputs = runners[0].forward(batch)
        for runner in runners[1:]:
            runner.compare(*runner.forward(batch), ref_logits, ref_outputs)
        scheduler.complete(batch, ref_logits.argmax(-1))
        if show_progress:
            progress(scheduler.finished, len(requests), scheduler.step)
    if show_progress:
        sys.stderr.write("\n")
    return scheduler.stats


def calibrate(args, model):
    """Static cache scales, offline: per layer, the absolute maximum of K and of V per kv head over
    other prompts served with the bf16 cache, with headroom. Returns [layers, 2, kv_heads]."""
    requests = make_requests(args, np.random.default_rng(args.seed + 1))[:CALIBRATION_PROMPTS]
    for request in requests:
        request.arrival, request.new_tokens = 0, 1
    runner = Runner(REFERENCE, model, args)
    serve(args, requests, [runner], show_progress=False)
    return runner.kv_absmax * np.float32(CALIBRATION_HEADROOM)


def run(args):
    """Serves the requests once per cache type, in lockstep; returns (runners, scheduler stats)."""
    rng = np.random.default_rng(args.seed)
    model = TinyDecoder(args, rng)
    requests = make_requests(args, rng)
    absmax = calibrate(args, model)
    runners = [Runner(quant, model, args, absmax)
               for quant in [REFERENCE] + [q for q in cache.QUANT_TYPES if q != REFERENCE]]
    return runners, serve(args, requests, runners)


def violations(runners, mean_bounds=None, max_bound=MAX_ERROR_BOUND):
    """Messages for every layer of every cache type that breaks an accuracy bound (NaN does)."""
    mean_bounds = MEAN_ERROR_BOUNDS if mean_bounds is None else mean_bounds
    found = []
    for runner in runners[1:]:
        for layer_id, (worst, mean) in enumerate(runner.error_summary()):
            where = f"{runner.quant}, layer {layer_id}"
            if not mean <= mean_bounds[runner.quant]:
                found.append(f"{where}: mean relative error {mean:.3g} above {mean_bounds[runner.quant]}")
            if not worst <= max_bound:
                found.append(f"{where}: a token's relative error {worst:.3g} above {max_bound}")
    return found


def report(args, runners, stats):
    lines = [f"fastattn demo on {args.device}: {args.layers} layers, {args.heads} query / {args.kv_heads} kv heads, "
             f"head_dim {args.head_dim}, block_size {args.block_size}, prefill path {args.prefill_path}",
             f"{args.requests} requests over {args.prefixes} shared prefixes of {args.prefix_len} tokens: "
             f"{stats['prompt_tokens']} prompt tokens ({stats['prefix_hit_tokens']} from the prefix cache), "
             f"{args.requests * args.new_tokens} generated; {stats['steps']} steps, {stats['mixed_steps']} of them "
             "mixing prefill and decode",
             f"relative error of each token's attention output against the bf16-cache run; {bounds_text()}", ""]
    for runner in runners:
        speed = (f"prefill {runner.tokens_per_second('prefill'):,.0f} tok/s, "
                 f"decode {runner.tokens_per_second('decode'):,.0f} tok/s")
        lines.append(f"{runner.quant}: {runner.bytes_per_token} KV-cache bytes per token, {speed}")
        if runner is runners[0]:
            lines += ["  the reference run: it picks the tokens every run is fed", ""]
            continue
        lines.append(f"  next tokens agree with the bf16 run: {runner.agreed}/{runner.predicted}")
        lines.append(f"  {'layer':>5}  {'max rel err':>11}  {'mean rel err':>12}")
        lines += [f"  {i:>5}  {m:>11.2e}  {a:>12.2e}" for i, (m, a) in enumerate(runner.error_summary())]
        lines.append("")
    return "\n".join(lines)


def bounds_text():
    means = ", ".join(f"{quant} {bound}" for quant, bound in MEAN_ERROR_BOUNDS.items())
    return f"accuracy bounds: mean per layer {means}; any single token {MAX_ERROR_BOUND}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastattn.demo", description=__doc__, epilog=bounds_text(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="gpu" if gpu_available() else "cpu")
    parser.add_argument("--prefill-path", choices=PREFILL_PATHS, default="paged",
                        help="FlashAttentionBackend's structure for prompt tokens")
    parser.add_argument("--seed", type=int, default=0)
    sizes = parser.add_argument_group("sizes (help shows the CPU / GPU defaults)")
    for name, (meaning, cpu, gpu) in SIZE_FLAGS.items():
        pair = isinstance(cpu, tuple)
        defaults = " / ".join("-".join(map(str, d)) if pair else str(d) for d in (cpu, gpu))
        sizes.add_argument("--" + name.replace("_", "-"), type=float if isinstance(cpu, float) else int,
                           nargs=2 if pair else None, metavar=("MIN", "MAX") if pair else "N",
                           help=f"{meaning} ({defaults})")
    args = parser.parse_args(argv)
    if args.device == "gpu" and not gpu_available():
        parser.error("--device gpu: Paddle sees no GPU")
    for name, (_, cpu, gpu) in SIZE_FLAGS.items():
        if getattr(args, name) is None:
            setattr(args, name, cpu if args.device == "cpu" else gpu)
    if args.head_dim not in (64, 128, 256) or args.block_size not in (16, 32, 64, 128):
        parser.error("--head-dim must be 64, 128 or 256 and --block-size 16, 32, 64 or 128")
    counts = [name for name in SIZE_FLAGS if name not in ("prefix_len", "suffix_len", "arrival_gap")]
    if min(getattr(args, name) for name in counts) < 1 or args.prefix_len < 0 or min(args.suffix_len) < 0 \
            or args.prefix_len + args.suffix_len[0] < 1 or args.arrival_gap < 0:
        parser.error("sizes: counts must be positive, lengths and the arrival gap non-negative, prompts not empty")
    args.suffix_len = tuple(sorted(args.suffix_len))
    if args.heads % args.kv_heads:
        parser.error(f"--heads ({args.heads}) must be a multiple of --kv-heads ({args.kv_heads})")
    args.max_blocks_per_seq = -(-(args.prefix_len + args.suffix_len[1] + args.new_tokens) // args.block_size)
    # every slot's worst case, plus room to keep the shared prefixes cached between their users
    args.num_blocks = (args.max_batch * args.max_blocks_per_seq
                       + args.prefixes * -(-args.prefix_len // args.block_size))
    return args


def main(argv=None):
    args = parse_args(argv)
    runners, stats = run(args)
    print(report(args, runners, stats))
    problems = violations(runners)
    for problem in problems:
        print("ACCURACY BOUND VIOLATED: " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
