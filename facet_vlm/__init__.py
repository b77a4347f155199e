"""facet-vlm: 2D+3D and 4D facial expression recognition, and face+pulse video emotion recognition.

``import facet_vlm`` registers every model of `facet_vlm.registry` (also those of the ``couple`` package, which it
imports) with transformers' `AutoConfig`, `AutoModel`, task Auto class and `AutoProcessor`, and the pipelines
``expression-recognition`` and ``video-emotion-recognition`` with transformers' `PIPELINE_REGISTRY`.
"""

from .configuration_facet_vlm import FacetVLMConfig
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
from .modeling_facet_vlm import (
    CrossViewSemanticAggregation,
    FacetVLMForExpressionRecognition,
    FacetVLMModel,
    FacetVLMOutput,
    MultiviewTextGuidedFusion,
    sample_sequence_frames,
)
from .pipelines import ExpressionRecognitionPipeline, VideoEmotionRecognitionPipeline, pipeline, register_pipelines
from .processing_facet_vlm import FacetVLMProcessor
from .registry import MODEL_REGISTRY, register_auto_classes
from .tokenization import clip_token_ids

FacetVLMConfig.prompt_tokenizer = staticmethod(clip_token_ids)


register_auto_classes()
register_pipelines()


def _import_couple() -> None:
    """Import ``couple`` so that its classes are importable from one ``import facet_vlm``; skipped while ``couple``
    itself is being imported (it imports ``facet_vlm`` for the errors and processors: no circle at run time)."""
    import sys

    if "couple" not in sys.modules:
        import couple  # noqa: F401


_import_couple()

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DatasetLayoutError",
    "CrossViewSemanticAggregation",
    "Face",
    "FacetVLMConfig",
    "FacetVLMError",
    "FacetVLMForExpressionRecognition",
    "FacetVLMModel",
    "FacetVLMOutput",
    "FacetVLMProcessor",
    "MODEL_REGISTRY",
    "MultiviewTextGuidedFusion",
    "FormatError",
    "MissingTextureError",
    "UnsafePickleError",
    "UnsupportedFormatError",
    "ExpressionRecognitionPipeline",
    "VideoEmotionRecognitionPipeline",
    "pipeline",
    "sample_sequence_frames",
]
