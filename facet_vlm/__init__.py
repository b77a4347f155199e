"""facet-vlm: 2D+3D and 4D facial expression recognition, and face+pulse video emotion recognition."""

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
from .pipelines import ExpressionRecognitionPipeline, pipeline
from .processing_facet_vlm import FacetVLMProcessor
from .tokenization import clip_token_ids

FacetVLMConfig.prompt_tokenizer = staticmethod(clip_token_ids)


def _register_facet_vlm() -> None:
    """Make `AutoConfig` / `AutoModel` / `AutoModelForImageClassification` know FACET-VLM, and make saved folders
    carry the model code and an `auto_map` (loadable with `trust_remote_code=True` without this package)."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    AutoConfig.register(FacetVLMConfig.model_type, FacetVLMConfig, exist_ok=True)
    AutoModel.register(FacetVLMConfig, FacetVLMModel, exist_ok=True)
    AutoModelForImageClassification.register(FacetVLMConfig, FacetVLMForExpressionRecognition, exist_ok=True)
    FacetVLMConfig.register_for_auto_class()
    FacetVLMModel.register_for_auto_class("AutoModel")
    FacetVLMForExpressionRecognition.register_for_auto_class("AutoModelForImageClassification")


_register_facet_vlm()

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
    "MultiviewTextGuidedFusion",
    "FormatError",
    "MissingTextureError",
    "UnsafePickleError",
    "UnsupportedFormatError",
    "ExpressionRecognitionPipeline",
    "pipeline",
    "sample_sequence_frames",
]
