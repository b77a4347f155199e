"""CoupleFER, AFNet-M and the physio-facial prompt-tuning model as Hugging Face classes.

The models are registered with transformers' Auto classes (and marked for remote code) by `facet_vlm`, from the one
list of models in `facet_vlm.registry`; ``import couple`` alone registers them too. Importing `facet_vlm.registry`
first runs `facet_vlm`'s own import, which loads the model files of this package by their module names while this
package is still being imported, so the two packages never wait on each other.
"""

from facet_vlm.registry import register_auto_classes

from .configuration_afnet_m import AFNetMConfig
from .configuration_couplefer import CoupleFERConfig
from .configuration_physio_prompt import PhysioPromptConfig
from .modeling_afnet_m import AFNetMForExpressionRecognition
from .modeling_couplefer import CoupleFERForExpressionRecognition, CoupleFERModel
from .modeling_physio_prompt import PhysioPromptForEmotionRecognition, PhysioPromptOutput, ratings_to_labels
from .processing_couple import AFNetMProcessor, CoupleFERProcessor
from .processing_physio_prompt import PhysioPromptProcessor

register_auto_classes()  # already done when facet_vlm was imported first; idempotent

__all__ = [
    "AFNetMConfig",
    "AFNetMForExpressionRecognition",
    "AFNetMProcessor",
    "CoupleFERConfig",
    "CoupleFERForExpressionRecognition",
    "CoupleFERModel",
    "CoupleFERProcessor",
    "PhysioPromptConfig",
    "PhysioPromptForEmotionRecognition",
    "PhysioPromptOutput",
    "PhysioPromptProcessor",
    "ratings_to_labels",
]
