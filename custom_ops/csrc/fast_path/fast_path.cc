// Dygraph fast path: the per-layer ops' C++ entry points bound straight to Python, as module
// `fastattn_fast` inside this same library (fastattn/_ext.py loads it by path). A call skips
// Paddle's custom-op dispatcher, which costs 20-50 us of host time per call, more than a decode
// kernel takes. The ops stay registered (PD_BUILD_OP) for static graphs; both paths run the same
// functions.
//
// The module uses the plain CPython API and Paddle's exported tensor converters only: a pybind11
// module would share pybind11's process-wide state (exception translators, type registry) with
// Paddle's own pybind11 build, whose version and compiler differ between Paddle wheels. Every
// error becomes a Python exception before it leaves the module.
//
// The build defines PADDLE_NO_PYTHON for every other file (their Paddle headers must not pull in
// Python) and PADDLE_WITH_CUDA where CUDA sources are built; this file needs Python, and none of
// Paddle's CUDA declarations (some of which need cuBLAS headers a CUDA toolkit may lack).
#undef PADDLE_NO_PYTHON
#undef PADDLE_WITH_CUDA

#include <Python.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "paddle/extension.h"
#include "paddle/utils/pybind.h"

#include "../common/op_entry_points.h"

namespace fastattn {
namespace {

using paddle::Tensor;

// A wrong argument type: raised as TypeError; a wrong value of the right type: ValueError.
struct ArgumentTypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ArgumentValueError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Whether a tensor is contiguous. Paddle 3's C++ tensor answers itself; 2.6's lacks the method,
// so its Python object is asked.
template <class T>
auto is_contiguous(const T& t, PyObject*, int) -> decltype(t.is_contiguous()) {
  return t.is_contiguous();
}
template <class T>
bool is_contiguous(const T&, PyObject* object, long) {
  static PyObject* const method = PyUnicode_InternFromString("is_contiguous");
  PyObject* answer = PyObject_CallMethodNoArgs(object, method);
  const int contiguous = answer ? PyObject_IsTrue(answer) : -1;
  Py_XDECREF(answer);
  if (contiguous < 0) {  // no such method: that Paddle makes no strided views
    PyErr_Clear();
    return true;
  }
  return contiguous == 1;
}

// Whether a tensor's elements are packed row-major, as the ops index data(): only this path can
// hand them a strided view (Paddle's dispatcher copies views first, and drops what an op writes
// into the copy of an in-place one). Paddle calls a tensor non-contiguous where a dimension of
// size 1 has another stride ([1, 8, 64] cut from [1, 24, 64]), whose elements are packed all the
// same: its strides (get_strides(), in Paddle 2.6 and 3) decide.
bool packed_elements(const Tensor& t, PyObject* object) {
  if (is_contiguous(t, object, 0)) return true;
  static PyObject* const method = PyUnicode_InternFromString("get_strides");
  PyObject* strides = PyObject_CallMethodNoArgs(object, method);
  PyObject* list = strides ? PySequence_Fast(strides, "strides") : nullptr;
  Py_XDECREF(strides);
  const std::vector<int64_t> shape = t.shape();
  bool packed = list != nullptr && PySequence_Fast_GET_SIZE(list) == Py_ssize_t(shape.size());
  int64_t step = 1;
  for (Py_ssize_t i = Py_ssize_t(shape.size()) - 1; packed && i >= 0; --i) {
    const long long stride = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(list, i));
    packed = shape[i] == 1 || stride == step;
    step *= shape[i];
  }
  Py_XDECREF(list);
  PyErr_Clear();
  return packed;
}

// The positional arguments of one call, read by position with the type the op expects; `names`
// (one per argument) name them in errors.
class Args {
 public:
  template <size_t N>
  Args(const char* op, PyObject* const* items, Py_ssize_t count, const char* const (&names)[N])
      : op_(op), items_(items), names_(names) {
    if (count != Py_ssize_t(N)) {
      throw ArgumentTypeError(std::string(op) + "() takes " + std::to_string(N) + " arguments (" +
                              std::to_string(count) + " given)");
    }
  }

  Tensor& tensor(int i) const {
    if (!paddle::pybind::PyCheckTensor(items_[i])) wrong_type(i, "a paddle.Tensor");
    Tensor& t = paddle::pybind::CastPyArg2Tensor(items_[i], i);
    if (t.initialized() && !packed_elements(t, items_[i])) {
      throw ArgumentValueError(prefix(i) + " is a strided view: the op reads and writes packed rows; pass a dense "
                               "tensor (the tensor itself, not a view of a larger one, where the op writes it)");
    }
    return t;
  }
  paddle::optional<Tensor> optional_tensor(int i) const {
    if (items_[i] == Py_None) return paddle::none;
    return tensor(i);
  }
  std::string string(int i) const {
    const char* text = PyUnicode_Check(items_[i]) ? PyUnicode_AsUTF8(items_[i]) : nullptr;
    if (text == nullptr) wrong_type(i, "a str");
    return text;
  }
  double number(int i) const {
    const double value = PyFloat_AsDouble(items_[i]);
    if (value == -1.0 && PyErr_Occurred()) wrong_type(i, "a number");
    return value;
  }
  int integer(int i) const {
    PyObject* index = PyNumber_Index(items_[i]);  // any integer type, numpy's included
    int overflow = 0;
    const long long value = index ? PyLong_AsLongLongAndOverflow(index, &overflow) : -1;
    Py_XDECREF(index);
    if (value == -1 && PyErr_Occurred()) wrong_type(i, "an int");
    if (overflow != 0 || value < INT32_MIN || value > INT32_MAX) {
      throw ArgumentValueError(prefix(i) + (overflow ? std::string() : " = " + std::to_string(value)) +
                               " does not fit in int32");
    }
    return int(value);
  }
  bool boolean(int i) const {
    if (!PyBool_Check(items_[i])) wrong_type(i, "a bool");
    return items_[i] == Py_True;
  }

 private:
  std::string prefix(int i) const { return std::string(op_) + "(): " + names_[i]; }
  [[noreturn]] void wrong_type(int i, const char* expected) const {
    PyErr_Clear();
    throw ArgumentTypeError(prefix(i) + " must be " + expected + ", not " + Py_TYPE(items_[i])->tp_name);
  }
  const char* op_;
  PyObject* const* items_;
  const char* const* names_;
};

PyObject* to_python(const std::vector<Tensor>& outputs) {
  PyObject* tuple = PyTuple_New(Py_ssize_t(outputs.size()));
  if (tuple == nullptr) return nullptr;
  for (size_t i = 0; i < outputs.size(); ++i) {
    PyObject* item = paddle::pybind::ToPyObject(outputs[i]);
    if (item == nullptr) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, Py_ssize_t(i), item);
  }
  return tuple;
}

PyObject* to_python() { Py_RETURN_NONE; }

// Runs one op call; C++ exceptions become Python exceptions here, never past this frame.
template <typename Body>
PyObject* guarded(Body body) {
  try {
    return body();
  } catch (const ArgumentTypeError& e) {
    PyErr_SetString(PyExc_TypeError, e.what());
  } catch (const ArgumentValueError& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "fastattn: unknown C++ exception");
  }
  return nullptr;
}

PyObject* write_cache_kv(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    static const char* const kNames[] = {"k", "v", "key_cache", "value_cache", "block_tables", "cu_seqlens_q",
                                         "seq_lens_decoder", "k_quant_scale", "v_quant_scale", "cache_quant_type"};
    const Args a("write_cache_kv", items, count, kNames);
    WriteCacheKV(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor(3), a.tensor(4), a.tensor(5), a.tensor(6),
                 a.optional_tensor(7), a.optional_tensor(8), a.string(9));
    return to_python();
  });
}

PyObject* write_cache_kv_dynamic(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    static const char* const kNames[] = {"k", "v", "key_cache", "value_cache", "k_scale_cache", "v_scale_cache",
                                         "block_tables", "cu_seqlens_q", "seq_lens_decoder"};
    const Args a("write_cache_kv_dynamic", items, count, kNames);
    WriteCacheKVDynamic(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor(3), a.tensor(4), a.tensor(5), a.tensor(6),
                        a.tensor(7), a.tensor(8));
    return to_python();
  });
}

PyObject* append_cache_kv_c8(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    static const char* const kNames[] = {"key_cache", "value_cache", "k_out", "v_out", "block_tables",
                                         "seq_lens_this_time", "seq_lens_decoder", "cu_seqlens_k", "k_scale", "v_scale",
                                         "cache_quant_type"};
    const Args a("append_cache_kv_c8", items, count, kNames);
    AppendCacheKVC8(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor(3), a.tensor(4), a.tensor(5), a.tensor(6),
                    a.tensor(7), a.optional_tensor(8), a.optional_tensor(9), a.string(10));
    return to_python();
  });
}

PyObject* flash_attn_varlen(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    static const char* const kNames[] = {"q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "q_descale", "k_descale",
                                         "v_descale", "softmax_scale", "causal", "out_dtype", "max_seqlen_k",
                                         "num_splits", "fp8_pv"};
    const Args a("flash_attn_varlen", items, count, kNames);
    return to_python(FlashAttnVarlen(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor(3), a.tensor(4),
                                     a.optional_tensor(5), a.optional_tensor(6), a.optional_tensor(7),
                                     float(a.number(8)), a.boolean(9), a.string(10), a.integer(11), a.integer(12),
                                     a.boolean(13)));
  });
}

PyObject* paged_attention(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    static const char* const kNames[] = {"q", "key_cache", "value_cache", "block_tables", "seq_lens_kv", "cu_seqlens_q",
                                         "k_scale", "v_scale", "q_descale", "kv_end", "cache_quant_type",
                                         "softmax_scale", "causal", "out_dtype", "num_splits", "fp8_pv",
                                         "max_seqlen_kv", "max_multi_token_seqs"};
    const Args a("paged_attention", items, count, kNames);
    return to_python(PagedAttention(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor(3), a.tensor(4), a.tensor(5),
                                    a.optional_tensor(6), a.optional_tensor(7), a.optional_tensor(8),
                                    a.optional_tensor(9), a.string(10), float(a.number(11)), a.boolean(12),
                                    a.string(13), a.integer(14), a.boolean(15), a.integer(16), a.integer(17)));
  });
}

PyObject* merge_attn_states(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    static const char* const kNames[] = {"prefix_output", "prefix_lse", "suffix_output", "suffix_lse", "output_scale",
                                         "out_dtype"};
    const Args a("merge_attn_states", items, count, kNames);
    return to_python(MergeAttnStates(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor(3), a.optional_tensor(4),
                                     a.string(5)));
  });
}

template <PyObject* (*F)(PyObject*, PyObject* const*, Py_ssize_t)>
PyMethodDef method(const char* name) {
  return {name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(F)), METH_FASTCALL,
          "as the registered op of the same name: its inputs, then its attributes, positionally"};
}

PyMethodDef methods[] = {
    method<write_cache_kv>("write_cache_kv"),
    method<write_cache_kv_dynamic>("write_cache_kv_dynamic"),
    method<append_cache_kv_c8>("append_cache_kv_c8"),
    method<flash_attn_varlen>("flash_attn_varlen"),
    method<paged_attention>("paged_attention"),
    method<merge_attn_states>("merge_attn_states"),
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "fastattn_fast",
    "fastattn's per-layer ops without Paddle's op dispatcher (dygraph only); arguments as the registered ops",
    -1, methods,
};

}  // namespace
}  // namespace fastattn

PyMODINIT_FUNC PyInit_fastattn_fast() { return PyModule_Create(&fastattn::module_def); }
