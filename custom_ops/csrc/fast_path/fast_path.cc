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

#include <stdexcept>
#include <string>
#include <vector>

#include "paddle/extension.h"
#include "paddle/utils/pybind.h"

#include "../common/op_entry_points.h"

namespace fastattn {
namespace {

using paddle::Tensor;

// A wrong argument type: raised as TypeError.
struct ArgumentTypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The positional arguments of one call, read by position with the type the op expects.
class Args {
 public:
  Args(const char* op, PyObject* const* items, Py_ssize_t count, Py_ssize_t expected) : op_(op), items_(items) {
    if (count != expected) {
      throw ArgumentTypeError(std::string(op) + "() takes " + std::to_string(expected) + " arguments (" +
                              std::to_string(count) + " given)");
    }
  }

  Tensor& tensor(int i) const {
    if (!paddle::pybind::PyCheckTensor(items_[i])) wrong_type(i, "a paddle.Tensor");
    return paddle::pybind::CastPyArg2Tensor(items_[i], i);
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
    const long value = index ? PyLong_AsLong(index) : -1;
    Py_XDECREF(index);
    if (value == -1 && PyErr_Occurred()) wrong_type(i, "an int");
    return int(value);
  }
  bool boolean(int i) const {
    if (!PyBool_Check(items_[i])) wrong_type(i, "a bool");
    return items_[i] == Py_True;
  }

 private:
  [[noreturn]] void wrong_type(int i, const char* expected) const {
    PyErr_Clear();
    throw ArgumentTypeError(std::string(op_) + "(): argument " + std::to_string(i) + " must be " + expected +
                            ", not " + Py_TYPE(items_[i])->tp_name);
  }
  const char* op_;
  PyObject* const* items_;
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
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "fastattn: unknown C++ exception");
  }
  return nullptr;
}

PyObject* write_cache_kv(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    const Args a("write_cache_kv", items, count, 10);
    WriteCacheKV(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor(3), a.tensor(4), a.tensor(5), a.tensor(6),
                 a.optional_tensor(7), a.optional_tensor(8), a.string(9));
    return to_python();
  });
}

PyObject* write_cache_kv_dynamic(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    const Args a("write_cache_kv_dynamic", items, count, 9);
    WriteCacheKVDynamic(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor(3), a.tensor(4), a.tensor(5), a.tensor(6),
                        a.tensor(7), a.tensor(8));
    return to_python();
  });
}

PyObject* append_cache_kv_c8(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    const Args a("append_cache_kv_c8", items, count, 11);
    AppendCacheKVC8(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor(3), a.tensor(4), a.tensor(5), a.tensor(6),
                    a.tensor(7), a.optional_tensor(8), a.optional_tensor(9), a.string(10));
    return to_python();
  });
}

PyObject* flash_attn_varlen(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    const Args a("flash_attn_varlen", items, count, 13);
    return to_python(FlashAttnVarlen(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor(3), a.tensor(4),
                                     a.optional_tensor(5), a.optional_tensor(6), a.optional_tensor(7),
                                     float(a.number(8)), a.boolean(9), a.string(10), a.integer(11), a.integer(12)));
  });
}

PyObject* paged_attention(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    const Args a("paged_attention", items, count, 15);
    return to_python(PagedAttention(a.tensor(0), a.tensor(1), a.tensor(2), a.tensor(3), a.tensor(4), a.tensor(5),
                                    a.optional_tensor(6), a.optional_tensor(7), a.optional_tensor(8),
                                    a.optional_tensor(9), a.string(10), float(a.number(11)), a.boolean(12),
                                    a.string(13), a.integer(14)));
  });
}

PyObject* merge_attn_states(PyObject*, PyObject* const* items, Py_ssize_t count) {
  return guarded([&] {
    const Args a("merge_attn_states", items, count, 6);
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
