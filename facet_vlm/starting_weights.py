"""Which weights a model started from, so that every number says so.

A training run records, for each tower of the model it trains, where its weights came from: ``random`` (built from
a config), a CLIP name or path (`from_clip`), or a saved model's path (``--init_from`` a folder of this library), and
whether the text tower's weights were trained. The record goes into the model's config (``starting_weights``: saved
with the model, read by the model card and the Space) and into the run's ``all_results.json``.

Example record of FACET-VLM started from CLIP with the conv stem, a frozen text tower and learned context::

    {"source": "clip", "vision_tower": "openai/clip-vit-base-patch16 (patch stem new: conv)",
     "text_tower": "openai/clip-vit-base-patch16", "text_tower_trained": false,
     "prompt_context": "16 learned context tokens, shared by all classes"}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Module names of pretrained-style towers and how the record names them.
TOWERS = {"vision_model": "vision_tower", "text_model": "text_tower", "image_encoder": "image_tower"}
#: Parameter-name parts of a text tower and its projection: any of them training means the text tower trained.
TEXT_PARTS = ("text_model", "text_projection")
#: What a record's ``source`` can be.
SOURCES = ("random", "clip", "saved_model")


def unwrap_base(model: Any) -> Any:
    """The model under a PEFT wrapper (the model itself without one)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def tower_names(model: Any) -> list[str]:
    """The record names of the towers a model has (`TOWERS`), in `TOWERS` order; ``["model"]`` for a model with no
    such tower (AFNet-M's CNN branches)."""
    present = {name.rsplit(".", 1)[-1] for name, _ in unwrap_base(model).named_modules()}
    return [label for module, label in TOWERS.items() if module in present] or ["model"]


def text_tower_trained(model: Any) -> bool:
    """Whether any weight of the text tower or its projection (LoRA adapters included) requires gradients."""
    return any(parameter.requires_grad and any(part in name.split(".") for part in TEXT_PARTS)
               for name, parameter in model.named_parameters())


def describe_starting_weights(model: Any, init_from: str | None) -> dict[str, Any]:
    """The starting-weights record of a model about to be trained (see the module doc).

    `init_from` is the run's ``--init_from``: None (random weights), a saved model folder of this library (its
    own record, if it has one, is kept under ``saved_model_started_from``) or a CLIP name or path (the tower
    descriptions `from_clip` wrote into the config are used where the model has them)."""
    config = unwrap_base(model).config
    towers = tower_names(model)
    recorded = getattr(config, "starting_weights", None) or {}
    saved_config = Path(init_from) / "config.json" if init_from else None
    saved_config = json.loads(saved_config.read_text(encoding="utf-8")) if saved_config and saved_config.is_file() \
        else {}
    if saved_config.get("model_type") == config.model_type:  # a saved model of this library, not a CLIP folder
        saved = saved_config.get("starting_weights")
        record: dict[str, Any] = {"source": "saved_model", **{tower: str(init_from) for tower in towers}}
        if saved:
            record["saved_model_started_from"] = saved
    elif init_from:
        record = {"source": "clip", **{tower: recorded.get(tower, str(init_from)) for tower in towers}}
    else:
        record = {"source": "random", **{tower: "random" for tower in towers}}
    if getattr(config, "class_head", None) == "linear":
        record["text_tower"] = "none (linear head)"
    record["text_tower_trained"] = text_tower_trained(model)
    context = getattr(config, "prompt_context_length", 0) if getattr(config, "class_head", "text") == "text" else 0
    if context:
        kind = "one per class" if config.prompt_context_class_specific else "shared by all classes"
        record["prompt_context"] = f"{context} learned context tokens, {kind}"
    return record


def record_starting_weights(model: Any, init_from: str | None) -> dict[str, Any]:
    """`describe_starting_weights`, stored in the model's config (``starting_weights``, saved with the model)."""
    record = describe_starting_weights(model, init_from)
    unwrap_base(model).config.starting_weights = record
    return record


def starting_weights_of(config: Any) -> dict[str, Any]:
    """The record of a model config (an object or a ``config.json`` dict); a model without one was built from a
    config: every tower random, untrained text tower unknown."""
    record = config.get("starting_weights") if isinstance(config, dict) else getattr(config, "starting_weights", None)
    return dict(record) if record else {"source": "random"}


def describe_record(record: dict[str, Any] | None) -> str:
    """One line for people: ``vision tower: CLIP openai/...; text tower: random, not trained; ...``."""
    record = record or {"source": "random"}
    source = record.get("source", "random")
    parts = []
    for tower in (*TOWERS.values(), "model"):
        if tower not in record:
            continue
        value = record[tower]
        if source == "clip" and value != "random" and not str(value).startswith("none"):
            value = f"CLIP {value}"
        elif source == "saved_model":
            value = f"saved model {value}"
        parts.append(f"{tower.replace('_', ' ')}: {value}")
    if not parts:
        parts.append("all weights: random")
    if "text_tower_trained" in record and "text_tower" in record and not str(record["text_tower"]).startswith("none"):
        parts.append("text tower trained" if record["text_tower_trained"] else "text tower frozen")
    if record.get("prompt_context"):
        parts.append(f"prompts: {record['prompt_context']}")
    return "; ".join(parts)


def prompts_are_language(record: dict[str, Any] | None) -> bool:
    """Whether the model's class prompts carry language: its text tower started from CLIP (directly, or through a
    saved model that did). Without that, prompts are learned class anchors."""
    record = record or {}
    if record.get("source") == "saved_model":
        return prompts_are_language(record.get("saved_model_started_from"))
    text = str(record.get("text_tower", "random"))
    return record.get("source") == "clip" and text != "random" and not text.startswith("none")


__all__ = ["SOURCES", "TOWERS", "describe_record", "describe_starting_weights", "prompts_are_language",
           "record_starting_weights", "starting_weights_of", "text_tower_trained", "tower_names", "unwrap_base"]
