"""Input validation for the op wrappers: every failure names the argument, what was expected
and what was received, and is raised before any kernel runs."""
import functools
import numbers
import os

import numpy as np
import paddle

HALF_DTYPES = ("bfloat16", "float16")
SCALE_DTYPES = ("float32", "bfloat16")
BYTE_DTYPES = ("uint8", "float8_e4m3fn")
HEAD_DIMS = (64, 128, 256)
BLOCK_SIZES = (16, 32, 64, 128)


# Values of a static program being built (paddle.static, paddle.jit.to_static): a dtype and a shape
# (-1 for a size known only when it runs) but no data, place or strides, so the checks of those
# apply to dygraph tensors only.
STATIC_TYPES = tuple(c for c in (getattr(getattr(paddle, "pir", None), "Value", None),
                                 getattr(paddle.static, "Variable", None)) if isinstance(c, type))


def is_static(t):
    # (Paddle 2.6 counts a dygraph tensor as a paddle.static.Variable too.)
    return isinstance(t, STATIC_TYPES) and not isinstance(t, paddle.Tensor)


@functools.lru_cache(maxsize=None)
def _name_of(dtype):
    # str() of a Paddle dtype goes through Python-level patches; the wrappers ask for a dozen
    # names per call.
    return str(dtype).replace("paddle.", "")


def dtype_name(t):
    return _name_of(t.dtype)


def place_name(t):
    """"gpu", "cpu", another place's name, or None for a static value (placed when it runs)."""
    if is_static(t):
        return None
    place = t.place
    if place.is_gpu_place():
        return "gpu"
    return "cpu" if place.is_cpu_place() else str(place)


def shape_matches(got, want):
    """Whether shape `got` is `want`: None or -1 in `want`, and -1 in `got` (a static size known
    only when the program runs), match any size."""
    return len(got) == len(want) and all(w is None or w < 0 or g < 0 or w == g for g, w in zip(got, want))


def plus(size, n):
    """size + n, or -1 (any) where size is unknown (-1)."""
    return size + n if size >= 0 else -1


def is_dense(t):
    """Whether t's elements are packed row-major, as the kernels read them. Paddle calls a tensor
    non-contiguous where a dimension of size 1 has another stride ([1, 8, 64] cut from
    [1, 24, 64]); its elements are packed all the same."""
    if is_static(t) or t.is_contiguous():
        return True
    packed = 1
    for size, stride in zip(reversed(list(t.shape)), reversed(list(t.get_strides()))):
        if size != 1 and stride != packed:
            return False
        packed *= size
    return True


def tensor(name, t, dtypes=None, shape=None, dense=True, written=False):
    """Checks that `t` is a paddle.Tensor (or a static program's value) of one of `dtypes`, of
    `shape` (see shape_matches) and, where `dense`, with packed elements: the kernels index packed
    rows, and a tensor the op writes in place (`written`) must be the caller's own, since a view of
    a larger one would be handed to the op as a copy by Paddle's dispatcher."""
    if not isinstance(t, paddle.Tensor) and not is_static(t):
        raise TypeError(f"{name}: expected a paddle.Tensor, got {type(t).__name__}")
    if dtypes is not None and dtype_name(t) not in dtypes:
        raise TypeError(f"{name}: expected dtype {' or '.join(dtypes)}, got {dtype_name(t)}")
    if shape is not None and not shape_matches(list(t.shape), shape):
        want = "[" + ", ".join("*" if e is None or e < 0 else str(e) for e in shape) + "]"
        raise ValueError(f"{name}: expected shape {want}, got {list(t.shape)}")
    if dense and not is_dense(t):
        fix = "the op writes into it: pass the tensor itself, not a view of a larger one" if written \
            else "pass a dense copy"
        raise ValueError(f"{name}: expected a contiguous tensor, got a strided view of shape {list(t.shape)}; {fix}")
    return t


def one_element(name, t):
    if all(d >= 0 for d in t.shape) and int(np.prod(t.shape)) != 1:
        raise ValueError(f"{name}: expected one element, got shape {list(t.shape)}")


def gpu_alignment(name, t, bytes_):
    """A GPU kernel that reads `bytes_` at a time needs t's data to start on such a boundary (every
    allocation does, a view at an offset may not). The CPU kernels take any address."""
    if place_name(t) == "gpu" and t.is_contiguous() and t.data_ptr() % bytes_:  # (Paddle copies the others)
        raise ValueError(f"{name}: the GPU kernels read {bytes_} bytes at a time, so the data must start "
                         f"{bytes_}-byte aligned (a view at an offset may not be); pass a copy")


def same_place(**named):
    places = {n: place_name(t) for n, t in named.items() if t is not None and not is_static(t)}
    if len(set(places.values())) > 1:
        listing = ", ".join(f"{n} on {p}" for n, p in places.items())
        raise ValueError(f"all tensors must be on the same device, got {listing}")


def choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(map(str, allowed))}, got {value!r}")


def absent(name, value, why):
    if value is not None:
        raise ValueError(f"{name}: must be None {why}")


def validation_enabled(validate, sample):
    """`validate=None` follows the FASTATTN_VALIDATE environment variable. A static program's
    values hold no data to check (`sample`: one of the call's tensors): validate=True raises there,
    the environment variable is ignored."""
    if is_static(sample):
        if validate:
            raise ValueError("validate: a static program's values hold no data to check; validate in dygraph")
        return False
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
    if len(values) == 0:
        raise ValueError(f"{name}: expected [batch + 1] offsets, got an empty tensor")
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
