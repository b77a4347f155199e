"""CoupleFER, AFNet-M and the physio-facial prompt-tuning model as Hugging Face classes, one folder each
(``couple/couplefer``, ``couple/afnet_m``, ``couple/physio_prompt``).

The models are registered with transformers' Auto classes by ``import facet_vlm`` (which ``import couple`` runs),
from the one list of models in `facet_vlm.registry`; every public name below is imported on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

import facet_vlm  # noqa: F401  (registers the models with the Auto classes)

#: Public name -> the module that defines it (imported on first access).
_LAZY = {
    "AFNetMConfig": "couple.afnet_m.configuration_afnet_m",
    "AFNetMForExpressionRecognition": "couple.afnet_m.modeling_afnet_m",
    "AFNetMModel": "couple.afnet_m.modeling_afnet_m",
    "AFNetMProcessor": "couple.afnet_m.processing_afnet_m",
    "CoupleFERConfig": "couple.couplefer.configuration_couplefer",
    "CoupleFERForExpressionRecognition": "couple.couplefer.modeling_couplefer",
    "CoupleFERModel": "couple.couplefer.modeling_couplefer",
    "CoupleFERProcessor": "couple.couplefer.processing_couplefer",
    "PhysioPromptConfig": "couple.physio_prompt.configuration_physio_prompt",
    "PhysioPromptForEmotionRecognition": "couple.physio_prompt.modeling_physio_prompt",
    "PhysioPromptModel": "couple.physio_prompt.modeling_physio_prompt",
    "PhysioPromptOutput": "couple.physio_prompt.modeling_physio_prompt",
    "ratings_to_labels": "couple.physio_prompt.modeling_physio_prompt",
    "PhysioPromptProcessor": "couple.physio_prompt.processing_physio_prompt",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'couple' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
