"""Helpers shared by the tests: where to run, random batches, poisoning."""
import math
import os
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastattn.tensors import from_numpy, gpu_available, to_numpy  # noqa: E402,F401


def places():
    """CPU always; the GPU too wherever Paddle sees one."""
    return ["cpu", "gpu"] if gpu_available() else ["cpu"]


def sm90_gpu():
    """Whether the GPU is an sm_90 one (Hopper), where the sm_90a kernels run."""
    if not gpu_available():
        return False
    import paddle
    return tuple(paddle.device.cuda.get_device_capability()) == (9, 0)


def seeded_rng(test, *salt):
    """A generator seeded from the test's id and parameters: different data for every case,
    repeatable run to run. FASTATTN_TEST_SEED=N draws another set."""
    text = test.id() + repr(salt)
    return np.random.default_rng([zlib.crc32(text.encode()), int(os.environ.get("FASTATTN_TEST_SEED", 0))])


class PagedBatch:
    """A batch of sequences with disjoint, shuffled cache blocks.

    final_lens[b] is the longest any sequence gets over the test; each sequence receives
    ceil(final_lens[b] / block_size) blocks, the rest of its table row is -1. Blocks owned by no
    sequence stay free so tests can check they are never touched.
    """

    def __init__(self, rng, block_size, final_lens, spare_blocks=3, extra_columns=1):
        self.block_size = block_size
        self.final_lens = list(final_lens)
        need = [math.ceil(n / block_size) for n in final_lens]
        self.num_blocks = sum(need) + spare_blocks
        width = max(need + [1]) + extra_columns
        order = rng.permutation(self.num_blocks)
        self.block_tables = np.full((len(final_lens), width), -1, np.int32)
        used = 0
        for b, n in enumerate(need):
            self.block_tables[b, :n] = order[used:used + n]
            used += n
        self.free_blocks = order[used:]


def cu_seqlens(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def random_bytes(rng, shape):
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def random_bits16(rng, shape, dtype):
    """Random finite 16-bit patterns: poison that is never mistaken for a written value."""
    from fastattn.reference import to_half_bits
    return to_half_bits(rng.uniform(-1e3, 1e3, size=shape).astype(np.float32) + 12345.0, dtype)


def float_values(t):
    """A paddle tensor's values as float64 numpy (16-bit floats decoded from their bits)."""
    from fastattn.reference import half_bits_to_float
    name = str(t.dtype).replace("paddle.", "")
    values = to_numpy(t)
    if name in ("bfloat16", "float16"):
        values = half_bits_to_float(values, name)
    return values.astype(np.float64)


def rel_err(got, want):
    """||got - want|| / ||want||, the attention-style error measure."""
    return np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)


def assert_bits_equal(test, got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    test.assertEqual(got.shape, want.shape, what)
    bad = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
    if bad.size:
        i = np.unravel_index(bad[0], got.shape)
        test.fail(f"{what}: {bad.size} of {got.size} elements differ; first at {i}: got {got[i]!r}, "
                  f"expected {want[i]!r}")
