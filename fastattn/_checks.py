"""Input validation for the op wrappers: every failure names the argument, what was expected
and what was received, and is raised before any kernel runs."""
import numbers
import os

import numpy as np
import paddle

HALF_DTYPES = ("bfloat16", "float16")
SCALE_DTYPES = ("float32", "bfloat16")
BYTE_DTYPES = ("uint8", "float8_e4m3fn")
HEAD_DIMS = (64, 128, 256)
BLOCK_SIZES = (16, 32, 64, 128)


_DTYPE_NAMES = {}


def dtype_name(t):
    # str() of a Paddle dtype goes through Python-level patches; the wrappers ask for a dozen
    # names per call, so remember them.
    dtype = t.dtype
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("paddle.", "")
    return name


def place_name(t):
    return "gpu" if t.place.is_gpu_place() else "cpu" if t.place.is_cpu_place() else str(t.place)


def tensor(name, t, dtypes=None, shape=None):
    """Checks that `t` is a contiguous paddle.Tensor of one of `dtypes` and of `shape` (None = any
    size)."""
    if not isinstance(t, paddle.Tensor):
        raise TypeError(f"{name}: expected a paddle.Tensor, got {type(t).__name__}")
    if dtypes is not None and dtype_name(t) not in dtypes:
        raise TypeError(f"{name}: expected dtype {' or '.join(dtypes)}, got {dtype_name(t)}")
    if shape is not None:
        got = list(t.shape)
        if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
            want = "[" + ", ".join("*" if e is None else str(e) for e in shape) + "]"
            raise ValueError(f"{name}: expected shape {want}, got {got}")
    if not t.is_contiguous():
        # The kernels index the data as packed rows, and an op's writes into a view would be lost
        # (Paddle's dispatcher hands the op a copy of it).
        raise ValueError(f"{name}: expected a contiguous tensor, got a strided view of shape {list(t.shape)}; "
                         f"pass {name}.contiguous()")
    return t


def gpu_alignment(name, t, bytes_):
    """A GPU kernel that reads `bytes_` at a time needs t's data to start on such a boundary (every
    allocation does, a view at an offset may not). The CPU kernels take any address."""
    if place_name(t) == "gpu" and t.data_ptr() % bytes_:
        raise ValueError(f"{name}: the GPU kernels read {bytes_} bytes at a time, so the data must start "
                         f"{bytes_}-byte aligned (a view at an offset may not be); pass a copy")


def same_place(**named):
    places = {n: place_name(t) for n, t in named.items() if t is not None}
    if len(set(places.values())) > 1:
        listing = ", ".join(f"{n} on {p}" for n, p in places.items())
        raise ValueError(f"all tensors must be on the same device, got {listing}")


def choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(map(str, allowed))}, got {value!r}")


def absent(name, value, why):
    if value is not None:
        raise ValueError(f"{name}: must be None {why}")


def validation_enabled(validate):
    """`validate=None` follows the FASTATTN_VALIDATE environment variable."""
    if validate is None:
        return os.environ.get("FASTATTN_VALIDATE", "0") not in ("", "0")
    return bool(validate)


def host(t):
    return np.asarray(t.numpy())


def block_table_entries(block_tables, num_blocks, block_size, spans):
    """Raises ValueError if a position in `spans` ({seq: (first, end)}) maps to no cache block.
    Costs a device-to-host copy of the small batch tensors: a debug check, off by default."""
    table = host(block_tables)
    for seq, (first, end) in spans.items():
        if end <= first:
            continue
        last_block = (end - 1) // block_size
        if last_block >= table.shape[1]:
            raise ValueError(
                f"block_tables: sequence {seq} needs positions up to {end - 1}, i.e. "
                f"{last_block + 1} blocks, but the table has {table.shape[1]} columns")
        for logical in range(first // block_size, last_block + 1):
            entry = int(table[seq, logical])
            if not 0 <= entry < num_blocks:
                raise ValueError(
                    f"block_tables[{seq}, {logical}] = {entry} is outside [0, {num_blocks}) but "
                    f"sequence {seq} uses positions {max(first, logical * block_size)}.."
                    f"{min(end, (logical + 1) * block_size) - 1} in that block")


def cu_seqlens(name, values, total, from_zero=False):
    """Raises ValueError unless `values` (host ints) are non-decreasing offsets in [0, total], the
    first of them 0 where `from_zero`."""
    if (values[0] != 0 if from_zero else values[0] < 0) or np.any(np.diff(values) < 0) or values[-1] > total:
        start = "starting at 0, " if from_zero else ""
        raise ValueError(f"{name}: expected non-decreasing offsets {start}in [0, {total}], got {values.tolist()}")


def non_negative(name, values):
    """Raises ValueError naming the first negative entry of `values` (host ints)."""
    negative = np.flatnonzero(values < 0)
    if negative.size:
        raise ValueError(f"{name}[{negative[0]}] = {values[negative[0]]}: expected a non-negative length")


def int32(name, value, low=0, expected=None):
    """Raises ValueError unless `value` is an int (numpy's too, not a bool) in [low, 2^31)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or not low <= value < 2**31:
        expected = expected or f"a {'non-negative' if low == 0 else 'positive'} int"
        raise ValueError(f"{name}: expected {expected} below 2^31, got {value!r}")
    return int(value)
