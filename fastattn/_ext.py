"""The compiled extension (built by `python setup_ops.py install`), loaded on first use."""
import functools
import glob
import importlib
import importlib.machinery
import importlib.util
import os
import tempfile
import warnings

NAME = "fastattn_ops"


@functools.lru_cache(maxsize=None)
def ops_module():
    spec = importlib.util.find_spec(NAME)
    if spec is None or spec.origin is None:
        raise ImportError(f"fastattn's compiled ops ({NAME}) are not installed: run "
                          "`python setup_ops.py install` from the repository root")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # paddle's cpp_extension warns about ccache on import
        if spec.origin.endswith(".py"):
            # Paddle 3 installs a Python stub that registers the ops and defines their functions.
            return importlib.import_module(NAME)
        # Paddle 2.6 under current setuptools installs the bare library: register it and
        # generate the op functions the way its stub would.
        from paddle.utils.cpp_extension import extension_utils
        op_names = extension_utils.load_op_meta_info_and_register_op(spec.origin)
        return extension_utils._generate_python_module(NAME, op_names, tempfile.mkdtemp(prefix=NAME))


FAST_NAME = "fastattn_fast"


@functools.lru_cache(maxsize=None)
def fast_module():
    """The dygraph fast path: module `fastattn_fast`, bound inside the same library
    (custom_ops/csrc/fast_path), whose functions take the registered ops' arguments and skip
    Paddle's op dispatcher. None where it cannot load (set FASTATTN_FAST_PATH=0 to turn it off);
    the registered ops then serve every call."""
    if os.environ.get("FASTATTN_FAST_PATH", "1") in ("", "0"):
        return None
    ops_module()  # registers the ops, and fails with a clear message if the library is missing
    origin = importlib.util.find_spec(NAME).origin
    libraries = glob.glob(os.path.join(os.path.dirname(origin), "*.so")) if origin.endswith(".py") else [origin]
    if len(libraries) != 1:
        return None
    loader = importlib.machinery.ExtensionFileLoader(FAST_NAME, libraries[0])
    try:
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(FAST_NAME, loader))
        loader.exec_module(module)
    except ImportError as err:
        warnings.warn(f"fastattn: no dygraph fast path ({err}); calls go through Paddle's op dispatcher")
        return None
    return module
