"""CoupleFER, AFNet-M and the physio-facial prompt-tuning model as Hugging Face classes.

Importing the package registers every model with `AutoConfig`/`AutoModel` and marks it for remote code, so that
`save_pretrained` writes a folder that `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads without
this package.
"""

from transformers import AutoConfig, AutoModel

from .configuration_afnet_m import AFNetMConfig
from .configuration_couplefer import CoupleFERConfig
from .configuration_physio_prompt import PhysioPromptConfig
from .modeling_afnet_m import AFNetMForExpressionRecognition
from .modeling_couplefer import CoupleFERForExpressionRecognition, CoupleFERModel
from .modeling_physio_prompt import PhysioPromptForEmotionRecognition, PhysioPromptOutput, ratings_to_labels
from .processing_couple import AFNetMProcessor, CoupleFERProcessor

AUTO_MODELS = [
    (CoupleFERConfig, CoupleFERForExpressionRecognition),
    (AFNetMConfig, AFNetMForExpressionRecognition),
    (PhysioPromptConfig, PhysioPromptForEmotionRecognition),
]

for _config_class, _model_class in AUTO_MODELS:
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")

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
    "ratings_to_labels",
]
