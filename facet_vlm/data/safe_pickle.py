"""Loading numpy-array pickles (DEAP's ``data_preprocessed_python/sNN.dat``) without running code.

A pickle can name any importable callable and have the loader call it (``os.system`` included). The restricted
unpickler resolves only the globals that numpy arrays and plain containers need and refuses everything else
*before* anything is called, raising :class:`~facet_vlm.errors.UnsafePickleError` with the file and the refused
name.
"""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FacetVLMError, FormatError, UnsafePickleError

#: How many bytes the constructors a pickle calls may allocate, per byte of the file, by default (a choice: a numpy
#: pickle needs about one, as its arrays' bytes are in the file), plus `ALLOCATION_SLACK` bytes.
ALLOCATION_FACTOR = 4
ALLOCATION_SLACK = 2**20
_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}
_FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
_CONTAINERS = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset}
_BYTES_ENCODINGS = ("latin1", "latin-1", "iso-8859-1")
_NDARRAY = object()  # what the pickle gets for numpy.ndarray: only `_reconstruct` accepts it, nothing can call it


class _CheckedArray(np.ndarray):
    """The arrays a pickle reconstructs: their state is checked before numpy's ``__setstate__`` sees it (numpy
    trusts it: an object array whose state lists fewer items than its shape crashes the process)."""

    _unpickler: RestrictedUnpickler | None = None

    def __setstate__(self, state: Any) -> None:
        unpickler = self._unpickler
        if unpickler is None or not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("malformed ndarray state")
        shape, dtype, _, raw = state[-4:]
        unpickler.check_dtype(dtype)
        count = unpickler.check_shape(shape)
        if not isinstance(raw, (bytes, bytearray, str)) or len(raw) != count * dtype.itemsize:
            raise pickle.UnpicklingError(f"ndarray data of {len(raw) if hasattr(raw, '__len__') else '?'} bytes "
                                         f"for shape {shape} and dtype {dtype}")
        unpickler.charge(count * dtype.itemsize, "an array")
        super().__setstate__(state)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits numpy arrays (pickled with protocols 2 to 5), dtypes, scalars and builtin
    containers only, and bounds what they may allocate to `max_bytes` in all."""

    def __init__(self, file, path: str | PathLike, max_bytes: int, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.path = path
        self.max_bytes = max_bytes
        self.allocated = 0
        self.array_type = type("_CheckedArray", (_CheckedArray,), {"_unpickler": self})

    def charge(self, size: int, what: str) -> None:
        """Count `size` more bytes allocated; `FormatError` past `max_bytes`."""
        self.allocated += int(size)
        if self.allocated > self.max_bytes:
            raise FormatError(f"the pickle asks for more than {self.max_bytes} bytes (for {what}), more than a "
                              f"file of its size can hold; refused as a memory bomb", self.path)

    def check_dtype(self, dtype: Any) -> None:
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError(f"expected a numpy dtype, found {type(dtype).__name__}")
        if dtype.hasobject:
            raise UnsafePickleError(f"refused an array of Python objects (dtype {dtype}): only numeric arrays may "
                                    "be loaded", self.path)

    def check_shape(self, shape: Any) -> int:
        """The number of elements of `shape` after checking it is a tuple of non-negative integers."""
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise pickle.UnpicklingError(f"malformed array shape {shape!r}")
        return math.prod(shape)

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _NDARRAY:
            raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
        dtype = np.dtype(dtype) if isinstance(dtype, (bytes, str)) else dtype
        self.check_dtype(dtype)
        self.charge(self.check_shape(shape) * dtype.itemsize, "an array")
        return np.ndarray.__new__(self.array_type, shape, dtype)

    def _scalar(self, dtype: Any, data: Any = None) -> Any:
        self.check_dtype(dtype)
        if not isinstance(data, (bytes, str)) or len(data) != dtype.itemsize:
            raise pickle.UnpicklingError(f"numpy scalar data does not fit dtype {dtype}")
        data = data.encode("latin1") if isinstance(data, str) else data
        return np.frombuffer(data, dtype=dtype)[0].copy()

    def _frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        self.check_dtype(dtype)
        if not isinstance(buffer, (bytes, bytearray)):
            raise pickle.UnpicklingError(f"array buffer of type {type(buffer).__name__}")
        count = self.check_shape(shape)
        if count * dtype.itemsize != len(buffer) or order not in ("C", "F"):
            raise pickle.UnpicklingError(f"array buffer of {len(buffer)} bytes for shape {shape}, dtype {dtype}")
        self.charge(len(buffer), "an array")
        return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order).copy()

    def _bytearray(self, source: Any = b"", encoding: str | None = None) -> bytearray:
        if isinstance(source, int):
            self.charge(source, "a bytearray")
            return bytearray(source)
        if isinstance(source, str):
            if (encoding or "").lower() not in _BYTES_ENCODINGS:
                raise pickle.UnpicklingError(f"refused bytearray with encoding {encoding!r}")
            self.charge(len(source), "a bytearray")
            return bytearray(source, "latin1")
        if not isinstance(source, (bytes, bytearray)):
            raise pickle.UnpicklingError(f"refused bytearray of {type(source).__name__}")
        self.charge(len(source), "a bytearray")
        return bytearray(source)

    def _encode(self, text: str, encoding: str = "latin1") -> bytes:
        """Stand-in for ``_codecs.encode`` (Python 3 pickles bytes this way at protocol 2), latin-1 only."""
        if encoding.lower() not in _BYTES_ENCODINGS or not isinstance(text, str):
            raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
        self.charge(len(text), "bytes")
        return text.encode("latin1")

    def _container(self, kind: type) -> Any:
        def build(*args: Any) -> Any:
            if args and hasattr(args[0], "__len__"):
                self.charge(8 * len(args[0]), kind.__name__)
            return kind(*args)

        return build

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # Python 2 (and protocol 2) spelling
        key = (module, name)
        if key == ("numpy", "ndarray"):
            return _NDARRAY
        if key == ("numpy", "dtype"):
            return np.dtype
        if key in _RECONSTRUCT:
            return self._reconstruct
        if key in _SCALAR:
            return self._scalar
        if key in _FROMBUFFER:
            return self._frombuffer
        if module == "builtins" and name in _CONTAINERS:
            return self._container(_CONTAINERS[name])
        if module == "builtins" and name == "bytearray":
            return self._bytearray
        if module == "builtins" and name == "complex":
            return complex
        if module == "collections" and name == "OrderedDict":
            return self._container(OrderedDict)
        if module == "_codecs" and name == "encode":
            return self._encode
        raise UnsafePickleError(f"refused global {module}.{name}: only numpy arrays and plain containers may be "
                                "loaded; if you trust this file, convert it to .npz once with the official tools",
                                self.path)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused persistent id {pid!r}", self.path)


def _plain(value: Any) -> Any:
    """`value` with every checked array turned back into a plain `numpy.ndarray` (containers rebuilt)."""
    if isinstance(value, _CheckedArray):
        return value.view(np.ndarray)
    if isinstance(value, dict):
        for key in value:
            value[key] = _plain(value[key])
        return value
    if isinstance(value, list):
        value[:] = [_plain(item) for item in value]
        return value
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return value


def restricted_load(path: str | PathLike, encoding: str = "latin1", max_bytes: int | None = None) -> Any:
    """Unpickle ``path`` admitting only numpy arrays and plain containers, never calling anything else.

    ``encoding="latin1"`` reads Python 2 pickles (DEAP's) whose numpy buffers are 8-bit strings. Arrays pickled
    with any protocol up to 5 are read (protocol 5 keeps their bytes in band; out-of-band buffers are refused);
    arrays of Python objects are refused.

    Args:
        path: the pickle file.
        encoding: how Python 2 8-bit strings are decoded.
        max_bytes: the most the objects the pickle constructs may allocate in all; by default
            ``ALLOCATION_FACTOR`` times the file size plus ``ALLOCATION_SLACK``, as a pickle cannot hold more
            data than its own bytes (a call like ``bytearray(2**44)`` could ask for any amount).

    Raises:
        UnsafePickleError: the pickle names any other global (nothing it names is called) or an object array.
        FormatError: the file is missing, empty or not a pickle, or it asks for more than `max_bytes`.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        budget = ALLOCATION_FACTOR * size + ALLOCATION_SLACK if max_bytes is None else max_bytes
        with path.open("rb") as file:
            return _plain(RestrictedUnpickler(file, path, budget, encoding=encoding).load())
    except FacetVLMError:
        raise
    except FileNotFoundError:
        raise FormatError("file not found", path) from None
    except (MemoryError, RecursionError) as error:
        raise FormatError(f"not a readable numpy pickle ({type(error).__name__})", path) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError) as error:
        raise FormatError(f"not a readable numpy pickle ({type(error).__name__}: {error})", path) from error


def is_array_dict(value: Any, keys: tuple[str, ...]) -> bool:
    """Whether ``value`` is a dict holding numpy arrays under every name in ``keys``."""
    return isinstance(value, dict) and all(isinstance(value.get(key), np.ndarray) for key in keys)
