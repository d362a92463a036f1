"""The compiled extension (built by `python setup_ops.py install`), loaded on first use."""
import functools
import importlib
import importlib.util
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
