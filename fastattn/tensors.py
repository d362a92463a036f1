"""Moving numpy data into paddle tensors of a given dtype and place, and back.

Conversions happen on the CPU and only a copy goes to the GPU, so nothing here runs one of
Paddle's own GPU kernels (Paddle GPU 2.6 ships none for Hopper). 16-bit floats travel as their
uint16 bit patterns on the numpy side.
"""
import numpy as np
import paddle

from .reference import half_bits_to_float


def fp8_dtype():
    """paddle.float8_e4m3fn where this Paddle has it, else None (fp8 then travels as uint8)."""
    return getattr(paddle, "float8_e4m3fn", None)


def gpu_available():
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def to_place(t, place):
    """Copy a CPU tensor to `place` ("cpu", "gpu" or a paddle Place)."""
    if place is None or place == "cpu" or (not isinstance(place, str) and place.is_cpu_place()):
        return t
    return t.cuda()


def from_numpy(array, dtype=None, place=None):
    """numpy -> paddle tensor of `dtype` on `place`. For "bfloat16"/"float16", `array` may be the
    uint16 bit patterns or float values exactly representable in that type. For
    "float8_e4m3fn", `array` holds the uint8 bit patterns."""
    array = np.ascontiguousarray(array)
    if dtype == "bfloat16" and array.dtype == np.uint16:
        t = paddle.to_tensor(array, place=paddle.CPUPlace())  # Paddle reads numpy uint16 as bfloat16 bits
        if t.dtype == paddle.bfloat16:
            return to_place(t, place)
    if dtype in ("bfloat16", "float16"):
        if array.dtype == np.uint16:
            array = half_bits_to_float(array, dtype)
        t = paddle.to_tensor(np.asarray(array, np.float32), place=paddle.CPUPlace()).astype(dtype)
    elif dtype == "float8_e4m3fn":
        t = paddle.to_tensor(np.asarray(array, np.uint8), place=paddle.CPUPlace()).view(fp8_dtype())
    else:
        t = paddle.to_tensor(array if dtype is None else array.astype(dtype), place=paddle.CPUPlace())
    return to_place(t, place)


def to_numpy(t):
    """paddle tensor -> numpy; 16-bit floats as uint16 bits, float8 as uint8 bits."""
    name = str(t.dtype).replace("paddle.", "")
    if name == "float8_e4m3fn":
        t = t.cpu().view(paddle.uint8)
    array = np.asarray(t.numpy())
    if name in ("bfloat16", "float16"):
        return array.view(np.uint16)
    return array
