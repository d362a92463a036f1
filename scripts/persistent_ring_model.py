"""A model of the persistent sm_90a prefill kernel's rings (custom_ops/csrc/attention/attention_wgmma.cuh,
WgmmaShape::kPersistent), and of the one with two copying warpgroups (--head-dim 256), run over random
item sequences and random interleavings.

Roles: the copying warpgroup as two threads (warp 0, which sends the tensor copies and waits for every
stage it copies to, and one of the other 96, which copies only row by row and waits for a stage only
where it does, except at head_dim 256, where it waits for every stage), the computing warpgroups (two
at head_dim 128 and 256, three at 64) and, at head_dim 256, the widening warpgroup as one thread.
Every mbarrier counts its phases; a wait tests a parity, as `mbarrier.try_wait.parity` does, so a
wait two phases early passes. The turn ring, the item slots, tensor copies landing at any time after
they go out, and tiles sent by tensor copy or row by row at random are modelled. It stops at the
first write into a stage, an fp16 V buffer or Q's buffer that another role still reads or writes,
the first item posted into a slot whose last item some role has not taken, the first arrival in a
phase other than its own, or a deadlock.

    python scripts/persistent_ring_model.py [--sequences N] [--head-dim 64|128|256] [--q-buffers 1|2]
                                            [--post-at-start] [--fp8-pv] [--q-wait-by-one-thread]
                                            [--no-value-wait] [--early-stage-release]

--head-dim 64 models three computing warpgroups, four epilogue places (one unused) and six stages
(WgmmaShape::kEpiloguePlaces, kStages). --q-buffers 2 models the kernels whose Q K^Ts read Q from
shared memory (over cache_fp8 at head_dim 128, both caches at 64): two Q buffers taken by turns.
--post-at-start models the kernels over per-token scales, where a copying warp other than warp 0
posts the next item as soon as it has taken this one (v70; elsewhere warp 0 posts it once it has
sent this item's copies).
--fp8-pv models fp8_pv at head_dim 128: no epilogue places (each computing warpgroup stages its rows
in its own fp32 sums). Over contiguous keys (WgmmaShape::kValueRing) four stages of K and a ring of
three slots for V as copied, tile j + 2's copies after the arrival for tile j, once V's slot (tile
j - 1's) is transposed; with --q-buffers 2 (over cache_fp8) three stages of K and V, tile j + 2's
copies after tile j's widening.
--q-wait-by-one-thread models the protocol before v66 (docs/perf-notes.md), where only the thread
that sends Q waited for Q's buffer: it fails in the copy-first order.
--head-dim 256 models the kernels at head_dim 256 with FP8 q, which do not persist (one item, no
epilogue places) and have a second copying warpgroup that widens V (WgmmaShape::kCopyGroups, v78):
four stages with the split hand-over (contiguous keys, cache_fp8), three with one hand-over
(block_wise_fp8).
The first copying warpgroup only copies, the computing warpgroups wait for V themselves, and the
widening warpgroup arrives on a stage's k_free once it has read the stage's V, so that the copies
into a stage wait for its release alone. --no-value-wait drops the computing warpgroups' wait for V
where the hand-over is not split, as the first build over block_wise_fp8 did: it fails.
--early-stage-release leaves the widening warpgroup's arrival out (a stage free once its K is
read): it fails.
"""

import argparse
import random

V16_BUFFERS = 2

# The copying loop's orders (attention_wgmma.cuh: kSplitHandOver, kCopiesAfterWidening) per head_dim.
# At 128: contiguous FP8 q/k/v; block_wise_fp8 in blocks of 64 and 128; in blocks of 16 and 32 (and
# over cache_fp8). At 64 (persistent over the caches only): cache_fp8; block_wise_fp8.
# Where tile j + 2's copies go: before the arrival for tile j ("first"), after it, or after the widening.
ORDERS = {
    128: {
        "split hand-over, copies first": (True, "first"),
        "one hand-over, copies after the widening": (False, "widening"),
        "split hand-over, copies after the widening": (True, "widening"),
    },
    64: {
        "one hand-over, copies after the arrival": (False, "arrival"),
        "one hand-over, copies after the widening": (False, "widening"),
    },
    "fp8_pv": {  # over contiguous keys (V in a ring of its own)
        "one hand-over, copies after the arrival": (False, "arrival"),
    },
    "fp8_pv, cache_fp8": {
        "one hand-over, copies after the widening": (False, "widening"),
    },
    256: {  # (stages) with a second copying warpgroup that widens V
        "one hand-over, copies after the widening, three stages": (False, "widening", 3),
        "split hand-over, copies first, four stages": (True, "first", 4),
    },
}


class Hazard(Exception):
    pass


class Barrier:
    def __init__(self, count, name):
        self.count, self.pending, self.phase, self.name = count, count, 0, name

    def arrive(self, phase, times=1):
        if self.phase != phase:
            raise Hazard(f"{self.name}: arrival for phase {phase} while at {self.phase}")
        for _ in range(times):
            self.pending -= 1
            if self.pending == 0:
                self.phase += 1
                self.pending = self.count

    def expect_bytes(self, phase):  # a tensor copy's bytes count as one more arrival
        if self.phase != phase:
            raise Hazard(f"{self.name}: expected bytes for phase {phase} while at {self.phase}")
        self.pending += 1

    def passed(self, parity):
        return (self.phase & 1) != parity


def simulate(items, seed, split_hand_over, copies, q_wait_by_one_thread=False, q_buffers=1, groups=2,
             post_at_start=False, fp8_pv=False, stages=None, value_wait=True, early_stage_release=False):
    """stages: the head_dim 256 kernel's (one item, no epilogue places, a second copying warpgroup
    that widens V); value_wait False: its computing warpgroups wait for V only where the hand-over is
    split; early_stage_release: its widening warpgroup does not arrive on k_free."""
    rng = random.Random(seed)
    widener = stages is not None
    places = 0 if fp8_pv or widener else (groups + 1) // 2 * 2  # the epilogue's places in the stage ring
    value_slots = 3 if fp8_pv and q_buffers == 1 else 0  # kValueRing: V as copied in slots of its own
    STAGES = stages if widener else (4 if value_slots else 3) if fp8_pv else places + 2
    COMPUTE_THREADS = 128 * groups
    copiers = 2
    k_ready = [Barrier(copiers, f"k_ready[{s}]") for s in range(STAGES)]
    widener_frees = widener and not early_stage_release  # the widening warpgroup arrives on k_free
    k_free = [Barrier(COMPUTE_THREADS + 128 * widener_frees, f"k_free[{s}]") for s in range(STAGES)]
    v16_ready = [Barrier(1 if widener else copiers, f"v16_ready[{b}]") for b in range(V16_BUFFERS)]
    v16_free = [Barrier(COMPUTE_THREADS, f"v16_free[{b}]") for b in range(V16_BUFFERS)]
    q_free = Barrier(COMPUTE_THREADS, "q_free")
    turns = [1] + [0] * (groups - 1)  # the last computing warpgroup arrives once before the first turn
    item_full = [Barrier(1, f"item_full[{k}]") for k in range(2)]
    item_empty = [Barrier(copiers + groups + int(widener), f"item_empty[{k}]") for k in range(2)]
    slots = [None, None]  # the item each slot holds
    users = {("stage", s): [] for s in range(STAGES)}
    users.update({("v16", b): [] for b in range(V16_BUFFERS)})
    users.update({("values", v): [] for v in range(value_slots)})
    users.update({("q", b): [] for b in range(q_buffers)})
    users.update({("sums", w): [] for w in range(groups)})
    by_tensor_copy = {(i, j): rng.random() < 0.5 for i, n in enumerate(items) for j in range(n)}
    q_by_tensor_copy = [rng.random() < 0.5 for _ in items]
    landing = []  # tensor copies on their way: (barrier, phase, user, place)
    roles = [f"copy{t}" for t in range(copiers)] + [f"wg{w}" for w in range(groups)] + (["widen"] if widener else [])

    def start(place, user, writes):
        for other, other_writes in users[place]:
            same = other[:3] == user[:3] and user[0] in ("copy", "widen", "q copy")  # one tile's parts
            if other != user and not same and (writes or other_writes):
                raise Hazard(f"{user} {'writes' if writes else 'reads'} {place} while {other} uses it")
        users[place].append((user, writes))

    def finish(place, user):
        users[place].remove(next(u for u in users[place] if u[0] == user))

    def wait(ready):
        while not ready():
            yield

    # Item i goes through slot i % 2 (item_full / item_empty, the kernel's parities): posted once
    # every role took item i - 2, then taken by every role. Item len(items) is the end, posted and
    # taken too. Warp 0 posts item 0 at the start and, by default, item i + 1 once it has sent item
    # i's copies; with post_at_start (the kernels over per-token scales) the other copier posts item
    # i + 1 as soon as it has taken item i.
    readers = [set(), set()]  # the roles that took the item in each slot

    def post(i):
        slot = i % 2
        if i >= 2:
            yield from wait(lambda: item_empty[slot].passed(((i - 2) // 2) & 1))
            if len(readers[slot]) < len(roles):
                raise Hazard(f"item {i} posted while {sorted(set(roles) - readers[slot])} still read item {i - 2}")
        slots[slot], readers[slot] = i, set()
        item_full[slot].arrive(i // 2)

    def take(role, i):
        slot = i % 2
        yield from wait(lambda: item_full[slot].passed((i // 2) & 1))
        if slots[slot] != i:
            raise Hazard(f"{role} takes item {i} from a slot holding item {slots[slot]}")
        readers[slot].add(role)
        item_empty[slot].arrive(i // 2)

    class Ring:  # one role's position: ring_base as in the kernel
        def __init__(self):
            self.base = 0

        def index(self, j):
            return (self.base >> 1) + j

        def stage(self, j):
            return self.index(j) % STAGES

        def stage_phase(self, j):
            return self.index(j) // STAGES

        def v16(self, j):
            return self.index(j) % V16_BUFFERS

        def values(self, j):  # where V of tile j lands: its stage, or its slot of the value ring
            return ("values", self.index(j) % value_slots) if value_slots else ("stage", self.stage(j))

        def v16_parity(self, j):
            return ((self.index(j) >> 1) ^ (self.base & (places // 2 % 2))) & 1

        def advance(self, tiles):
            self.base = (self.base + 2 * (tiles + places)) ^ 1

    def widen(ring, i, j, who, phase):  # tile j's V to fp16, once it is in and its fp16 buffer free
        yield from wait(lambda: k_ready[ring.stage(j)].passed(ring.stage_phase(j) & 1))
        if ring.base > 0 or j >= V16_BUFFERS:
            yield from wait(lambda: v16_free[ring.v16(j)].passed(ring.v16_parity(j) ^ 1))
        user = ("widen", i, j, who)
        start(ring.values(j), user, False)
        start(("v16", ring.v16(j)), user, True)
        yield
        finish(ring.values(j), user)
        finish(("v16", ring.v16(j)), user)
        v16_ready[ring.v16(j)].arrive(phase)

    def copier(t):
        ring, widened, keyed = Ring(), 0, 0
        if t == 0:
            yield from post(0)
        for i, n in enumerate(items):
            yield from take(f"copy{t}", i)
            if post_at_start and t == 1:
                yield from post(i + 1)
            in_flight = []

            def load(j):
                tensor = by_tensor_copy[(i, j)]
                sends = not tensor or t == 0
                if not sends and not widener_frees:
                    return
                # (Where the widening warpgroup releases stages, every copying thread waits for the
                # release, copying or not: nothing else keeps one from arriving a ring ahead.)
                if ring.index(j) >= STAGES:
                    yield from wait(lambda: k_free[ring.stage(j)].passed((ring.stage_phase(j) & 1) ^ 1))
                if not sends:
                    return
                if value_slots and j >= value_slots:  # V's slot: every copier transposed the tile before
                    yield from wait(lambda: v16_ready[ring.v16(j - value_slots)].passed(ring.v16_parity(j - value_slots)))
                user = ("copy", i, j, t)
                places_written = [("stage", ring.stage(j))] + ([ring.values(j)] if value_slots else [])
                for place in places_written:
                    start(place, user, True)
                    if tensor:
                        k_ready[ring.stage(j)].expect_bytes(ring.stage_phase(j))
                        landing.append((k_ready[ring.stage(j)], user, place))
                    else:
                        in_flight.append((j, user, place))

            def arrive_for_keys(j):  # this thread's own copies of tile j (and Q with tile 0) have landed
                for entry in [e for e in in_flight if e[0] == j or (j == 0 and e[0] is None)]:
                    finish(entry[2], entry[1])
                    in_flight.remove(entry)
                k_ready[ring.stage(j)].arrive(ring.stage_phase(j))

            if n > 0:
                sends_q = not q_by_tensor_copy[i] or t == 0
                if sends_q or not q_wait_by_one_thread:
                    if ring.index(0) >= STAGES:
                        yield from wait(lambda: k_free[ring.stage(0)].passed((ring.stage_phase(0) & 1) ^ 1))
                    if keyed > 0:  # the computing warpgroups took the last item's Q
                        yield from wait(lambda: q_free.passed((keyed & 1) ^ 1))
                if sends_q:
                    user = ("q copy", i, None, t)
                    start(("q", keyed % q_buffers), user, True)
                    if q_by_tensor_copy[i]:
                        k_ready[ring.stage(0)].expect_bytes(ring.stage_phase(0))
                        landing.append((k_ready[ring.stage(0)], user, ("q", keyed % q_buffers)))
                    else:
                        in_flight.append((None, user, ("q", keyed % q_buffers)))
            for j in range(min(n, 2)):
                yield from load(j)
            if split_hand_over and n > 0:
                yield
                arrive_for_keys(0)
            for j in range(n):
                if copies == "first":
                    if split_hand_over and 2 <= j < n - 2 and not widener:
                        yield from wait(lambda: v16_ready[ring.v16(j - 2)].passed(ring.v16_parity(j - 2)))
                    if j + 2 < n:
                        yield from load(j + 2)
                yield
                if not split_hand_over:
                    arrive_for_keys(j)
                elif j + 1 < n:
                    arrive_for_keys(j + 1)
                if copies == "arrival" and j + 2 < n:
                    yield from load(j + 2)
                if not widener:  # (else the second copying warpgroup widens, and releases the stage)
                    assert (ring.v16(j), ring.v16_parity(j)) == (widened % 2, (widened // 2) & 1)
                    yield from widen(ring, i, j, t, widened // 2)
                    widened += 1
                if copies == "widening" and j + 2 < n:
                    yield from load(j + 2)
            if not post_at_start and t == 0:
                yield from post(i + 1)
            if n > 0:
                yield from wait(lambda: v16_ready[ring.v16(n - 1)].passed(ring.v16_parity(n - 1)))
                for place in range(n, n + places):  # the epilogue's places: nothing is copied there
                    k_ready[ring.stage(place)].arrive(ring.stage_phase(place))
                ring.advance(n)
                keyed += 1
        yield from take(f"copy{t}", len(items))

    def widening():  # the second copying warpgroup (one thread stands for its 128)
        ring = Ring()
        for i, n in enumerate(items):
            yield from take("widen", i)
            for j in range(n):
                yield from widen(ring, i, j, "w", j // 2)
                if widener_frees:
                    k_free[ring.stage(j)].arrive(ring.stage_phase(j), 128)
            ring.advance(n)
        yield from take("widen", len(items))

    def computer(w):
        ring, q_items, v16_uses = Ring(), 0, 0

        def take_turn():
            yield from wait(lambda: turns[w] > 0)
            turns[w] -= 1

        def pass_turn():
            turns[(w + 1) % groups] += 1

        def release_stage(j):
            k_free[ring.stage(j)].arrive(ring.stage_phase(j), 128)

        def release_v16(j):
            v16_free[ring.v16(j)].arrive((v16_uses + j) // 2, 128)

        for i, n in enumerate(items):
            yield from take(f"wg{w}", i)
            if n == 0:
                continue
            yield from wait(lambda: k_ready[ring.stage(0)].passed(ring.stage_phase(0) & 1))
            q_buffer, q_user = q_items % q_buffers, ("q read", i, w)
            start(("q", q_buffer), q_user, False)
            if q_buffers == 1:  # Q goes to registers: its buffer is free at once
                yield
                finish(("q", q_buffer), q_user)
            # With two buffers every Q K^T reads Q from its buffer, and the next item's Q goes to
            # the other one: this item's start says the item before is over, and its buffer free.
            q_free.arrive(q_items, 128)
            if ring.base > 0:
                for place in range(-places, 0):
                    release_stage(place)
            yield from take_turn()
            qk = ("qk", i, 0, w)
            start(("stage", ring.stage(0)), qk, False)
            pass_turn()
            yield
            finish(("stage", ring.stage(0)), qk)
            release_stage(0)
            for j in range(n - 1):
                yield from wait(lambda: k_ready[ring.stage(j + 1)].passed(ring.stage_phase(j + 1) & 1))
                yield from take_turn()
                qk = ("qk", i, j + 1, w)
                start(("stage", ring.stage(j + 1)), qk, False)
                if split_hand_over or (widener and value_wait):
                    yield from wait(lambda: v16_ready[ring.v16(j)].passed(ring.v16_parity(j)))
                pv = ("pv", i, j, w)
                start(("v16", ring.v16(j)), pv, False)
                pass_turn()
                yield
                finish(("stage", ring.stage(j + 1)), qk)
                release_stage(j + 1)
                yield
                finish(("v16", ring.v16(j)), pv)
                release_v16(j)
            yield from wait(lambda: v16_ready[ring.v16(n - 1)].passed(ring.v16_parity(n - 1)))
            yield from take_turn()
            pv = ("pv", i, n - 1, w)
            start(("v16", ring.v16(n - 1)), pv, False)
            pass_turn()
            yield
            finish(("v16", ring.v16(n - 1)), pv)
            release_v16(n - 1)
            v16_uses += n
            if q_buffers == 2:
                finish(("q", q_buffer), q_user)
            q_items += 1
            epilogue, place = ("epilogue rows", i, w), ("sums", w) if fp8_pv else ("stage", ring.stage(n + w))
            start(place, epilogue, True)
            yield
            yield
            finish(place, epilogue)
            ring.advance(n)
        yield from take(f"wg{w}", len(items))
        if w == 0:
            yield from take_turn()

    live = {f"copy{t}": copier(t) for t in range(copiers)}
    live.update({f"wg{w}": computer(w) for w in range(groups)})
    if widener:
        live["widen"] = widening()
    for _ in range(400000):
        if not live:
            return
        choice = rng.choice(list(live) + (["landing"] if landing else []))
        if choice == "landing":
            barrier, user, place = landing.pop(rng.randrange(len(landing)))
            finish(place, user)
            barrier.pending -= 1
            if barrier.pending == 0:
                barrier.phase += 1
                barrier.pending = barrier.count
            continue
        try:
            next(live[choice])
        except StopIteration:
            del live[choice]
    raise Hazard(f"no progress: {sorted(live)} still running")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=1000, help="random item sequences per order")
    parser.add_argument("--q-wait-by-one-thread", action="store_true")
    parser.add_argument("--head-dim", type=int, choices=(64, 128, 256), default=128)
    parser.add_argument("--q-buffers", type=int, choices=(1, 2), default=1,
                        help="2: Q read from shared memory by every Q K^T, two buffers in turn")
    parser.add_argument("--post-at-start", action="store_true",
                        help="the kernels over per-token scales: the next item posted as this one starts")
    parser.add_argument("--fp8-pv", action="store_true", help="fp8_pv at head_dim 128: no epilogue places")
    parser.add_argument("--no-value-wait", action="store_true",
                        help="head_dim 256: no wait for V where the hand-over is not split (the first build)")
    parser.add_argument("--early-stage-release", action="store_true",
                        help="head_dim 256: the widening warpgroup does not arrive on k_free")
    args = parser.parse_args()
    if args.fp8_pv and args.head_dim != 128:
        parser.error("fp8_pv persists at head_dim 128")
    if (args.no_value_wait or args.early_stage_release) and args.head_dim != 256:
        parser.error("--no-value-wait and --early-stage-release are the head_dim 256 kernels'")
    failed = 0
    groups = 3 if args.head_dim == 64 else 2
    orders = ORDERS[("fp8_pv" if args.q_buffers == 1 else "fp8_pv, cache_fp8") if args.fp8_pv else args.head_dim]
    for name, (split_hand_over, copies, *stages) in orders.items():
        bad = []
        for seed in range(args.sequences):
            rng = random.Random(seed)
            if stages:  # one item (a CTA's rows) of 0 to 24 key tiles
                items = [rng.choice([0, 1, 2, 3, 4, 5, 8, 13, 24])]
            else:
                items = [rng.choice([0, 1, 1, 1, 2, 2, 3, 4, 5, 6]) for _ in range(rng.randint(2, 14))]
            try:
                simulate(items, seed, split_hand_over, copies, args.q_wait_by_one_thread, args.q_buffers, groups,
                         args.post_at_start, args.fp8_pv, stages[0] if stages else None, not args.no_value_wait,
                         args.early_stage_release)
            except Hazard as e:
                bad.append((seed, items, str(e)))
        print(f"{name}: {len(bad)} of {args.sequences} item sequences fail")
        for seed, items, what in bad[:3]:
            print(f"  seed {seed}, key tiles per item {items}: {what}")
        failed += len(bad)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
