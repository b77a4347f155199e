"""facet-vlm: 2D+3D and 4D facial expression recognition, and face+pulse video emotion recognition.

``import facet_vlm`` is cheap: it imports neither torch nor transformers. The four models of `facet_vlm.registry` are
registered with transformers' `AutoConfig`, `AutoModel` and task Auto classes as soon as transformers' Auto modules
are imported (`facet_vlm.registry.register_when_imported`; configuration files only, the model code is imported the
first time a model is used), and every public name below is imported on first access. The pipelines
(``expression-recognition``, ``video-emotion-recognition``) and the processors' `AutoProcessor` entries are
registered by `facet_vlm.pipeline`, training and the Space, or by calling `facet_vlm.pipelines.register_pipelines` /
`facet_vlm.registry.register_processors`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    ConfigError,
    DatasetLayoutError,
    FacetVLMError,
    FormatError,
    MissingTextureError,
    UnsafePickleError,
    UnsupportedFormatError,
)
from .registry import MODEL_REGISTRY, register_when_imported

__version__ = "0.1.0"

_FACET_VLM = "facet_vlm.models.facet_vlm"
#: Public name -> the module that defines it (imported on first access).
_LAZY = {
    "FacetVLMConfig": f"{_FACET_VLM}.configuration_facet_vlm",
    "CrossViewSemanticAggregation": f"{_FACET_VLM}.modeling_facet_vlm",
    "FacetVLMForExpressionRecognition": f"{_FACET_VLM}.modeling_facet_vlm",
    "FacetVLMModel": f"{_FACET_VLM}.modeling_facet_vlm",
    "FacetVLMOutput": f"{_FACET_VLM}.modeling_facet_vlm",
    "MultiviewTextGuidedFusion": f"{_FACET_VLM}.modeling_facet_vlm",
    "sample_sequence_frames": f"{_FACET_VLM}.modeling_facet_vlm",
    "FacetVLMProcessor": f"{_FACET_VLM}.processing_facet_vlm",
    "clip_token_ids": f"{_FACET_VLM}.tokenization_facet_vlm",
    "Face": "facet_vlm.face",
    "ExpressionRecognitionPipeline": "facet_vlm.pipelines",
    "VideoEmotionRecognitionPipeline": "facet_vlm.pipelines",
    "pipeline": "facet_vlm.pipelines",
    "register_pipelines": "facet_vlm.pipelines",
    "register_processors": "facet_vlm.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'facet_vlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


register_when_imported()

__all__ = [
    "ConfigError",
    "CrossViewSemanticAggregation",
    "DatasetLayoutError",
    "ExpressionRecognitionPipeline",
    "Face",
    "FacetVLMConfig",
    "FacetVLMError",
    "FacetVLMForExpressionRecognition",
    "FacetVLMModel",
    "FacetVLMOutput",
    "FacetVLMProcessor",
    "FormatError",
    "MODEL_REGISTRY",
    "MissingTextureError",
    "MultiviewTextGuidedFusion",
    "UnsafePickleError",
    "UnsupportedFormatError",
    "VideoEmotionRecognitionPipeline",
    "clip_token_ids",
    "pipeline",
    "register_pipelines",
    "register_processors",
    "sample_sequence_frames",
]
