"""The compiled extension (built by `python setup_ops.py install`), loaded on first use."""
import functools
import warnings


@functools.lru_cache(maxsize=None)
def ops_module():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # paddle's cpp_extension warns about ccache on import
        try:
            import fastattn_ops
        except ImportError as err:
            raise ImportError(
                "fastattn's compiled ops are not installed: run `python setup_ops.py install` "
                "from the repository root"
            ) from err
    return fastattn_ops
