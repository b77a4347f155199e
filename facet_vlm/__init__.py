"""facet-vlm: 2D+3D and 4D facial expression recognition, and face+pulse video emotion recognition."""

from .errors import (
    ConfigError,
    DatasetLayoutError,
    FacetVLMError,
    FormatError,
    MissingTextureError,
    UnsafePickleError,
    UnsupportedFormatError,
)
from .face import Face

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DatasetLayoutError",
    "Face",
    "FacetVLMError",
    "FormatError",
    "MissingTextureError",
    "UnsafePickleError",
    "UnsupportedFormatError",
]
