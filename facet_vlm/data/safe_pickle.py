"""Loading numpy-array pickles (DEAP's ``data_preprocessed_python/sNN.dat``) without running code.

A pickle can name any importable callable and have the loader call it (``os.system`` included). The restricted
unpickler resolves only the globals that numpy arrays and plain containers need and refuses everything else
*before* anything is called, raising :class:`~facet_vlm.errors.UnsafePickleError` with the file and the refused
name.
"""

from __future__ import annotations

import pickle
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, UnsafePickleError

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
_BUILTIN_CONTAINERS = {"dict", "list", "tuple", "set", "frozenset", "complex", "bytearray"}
_BYTES_ENCODINGS = ("latin1", "latin-1", "iso-8859-1")


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode`` (Python 3 pickles bytes this way at protocol 2), limited to latin-1."""
    if encoding.lower() not in _BYTES_ENCODINGS or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits numpy arrays, dtypes, scalars and builtin containers only."""

    def __init__(self, file, path: str | PathLike, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        if module == "builtins" and name in _BUILTIN_CONTAINERS:
            return super().find_class(module, name)
        if module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        if module == "_codecs" and name == "encode":
            return _encode_latin1
        raise UnsafePickleError(f"refused global {module}.{name}: only numpy arrays and plain containers may be "
                                "loaded; if you trust this file, convert it to .npz once with the official tools",
                                self.path)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused persistent id {pid!r}", self.path)


def restricted_load(path: str | PathLike, encoding: str = "latin1") -> Any:
    """Unpickle ``path`` admitting only numpy arrays and plain containers.

    ``encoding="latin1"`` reads Python 2 pickles (DEAP's) whose numpy buffers are 8-bit strings.

    Raises:
        UnsafePickleError: the pickle names any other global (nothing it names is called).
        FormatError: the file is missing, empty or not a pickle.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            return RestrictedUnpickler(file, path, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except FileNotFoundError:
        raise FormatError("file not found", path) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise FormatError(f"not a readable numpy pickle ({type(error).__name__}: {error})", path) from error


def is_array_dict(value: Any, keys: tuple[str, ...]) -> bool:
    """Whether ``value`` is a dict holding numpy arrays under every name in ``keys``."""
    return isinstance(value, dict) and all(isinstance(value.get(key), np.ndarray) for key in keys)
