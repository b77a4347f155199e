"""Exceptions raised on bad input. Every one names the offending file (when there is one) and the problem."""

from __future__ import annotations

from os import PathLike


class FacetVLMError(Exception):
    """Base class of every error this library raises on bad input.

    Args:
        message: what is wrong and, where possible, what to do about it.
        path: the file or folder the problem was found in, if any; it prefixes the message.
    """

    def __init__(self, message: str, path: str | PathLike | None = None):
        self.path = None if path is None else str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class FormatError(FacetVLMError):
    """A file is truncated, empty, has a wrong header, or holds values that cannot be what they claim to be."""


class UnsupportedFormatError(FacetVLMError):
    """No reader knows the file's extension."""


class MissingTextureError(FacetVLMError):
    """A mesh names a texture image that cannot be found or read."""


class DatasetLayoutError(FacetVLMError):
    """A data-set root does not follow the official layout (missing folders, unparseable file names)."""


class UnsafePickleError(FacetVLMError):
    """A pickle asks for something other than numpy arrays and plain containers."""


class ConfigError(FacetVLMError):
    """A configuration value is out of range or inconsistent with another one."""


class UnsafePathError(FacetVLMError):
    """A path names a file outside the folders it may be read from (e.g. a Space request naming a server file)."""
