"""A transformers-style pipeline for expression recognition from 3D face scans.

    >>> from facet_vlm import pipeline
    >>> classifier = pipeline("expression-recognition", model="runs/exp1/model")
    >>> classifier("F0001_HA04WH_F3D.wrl", top_k=2)
    [{'label': 'happiness', 'score': 0.91}, {'label': 'surprise', 'score': 0.04}]

Like ``transformers.pipeline`` the result of one input is a list of ``{"label", "score"}`` dicts sorted by score
(all classes unless ``top_k``), and a list of inputs gives one such list per input. Inputs are scan paths (any
format `facet_vlm.io.read_face` reads) or `Face` objects; the model's own processor turns them into tensors, so
FACET-VLM, CoupleFER and AFNet-M all work through the same call.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError
from .face import Face
from .registry import MODEL_REGISTRY, entry_for_class

TASKS = ("expression-recognition",)

ScanInput = str | PathLike | Face


class ExpressionRecognitionPipeline:
    """Scan(s) in, sorted ``{"label", "score"}`` dicts out: read → processor → model → softmax.

    Args:
        model: a facet-vlm expression model (its ``config.id2label`` names the classes).
        processor: the callable that turns ``faces=[Face, ...]`` into the model's keyword inputs.
        device: where the model runs; defaults to the model's device.
        top_k: default number of classes returned per input (None = all).
        batch_size: scans per forward pass.
    """

    task = "expression-recognition"

    def __init__(self, model: torch.nn.Module, processor: Any, device: str | torch.device | None = None,
                 top_k: int | None = None, batch_size: int = 8):
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: must be >= 1")
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.device = next(self.model.parameters()).device
        self.processor = processor
        self.top_k = top_k
        self.batch_size = batch_size
        self.labels = [model.config.id2label[index] for index in range(len(model.config.id2label))]
        self._forward_names = set(inspect.signature(model.forward).parameters)

    def __call__(self, inputs: ScanInput | Sequence[ScanInput], top_k: int | None = None,
                 batch_size: int | None = None) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Classify one scan (returns a list of dicts) or a list of scans (returns a list of such lists)."""
        single = isinstance(inputs, str | PathLike | Face)
        items = [inputs] if single else list(inputs)
        batch_size = batch_size or self.batch_size
        top_k = self.top_k if top_k is None else top_k
        results: list[list[dict[str, Any]]] = []
        for start in range(0, len(items), batch_size):
            faces = [self.load(item) for item in items[start:start + batch_size]]
            probabilities = self.predict_proba(faces)
            results.extend(self.postprocess(row, top_k) for row in probabilities)
        return results[0] if single else results

    @staticmethod
    def load(item: ScanInput) -> Face:
        """A `Face` from a path (read with `facet_vlm.io.read_face`) or the face itself."""
        if isinstance(item, Face):
            return item
        if not isinstance(item, str | PathLike):
            raise ConfigError(f"pipeline input must be a scan path or a Face, got {type(item).__name__}")
        from .io import read_face

        return read_face(item)

    def preprocess(self, faces: list[Face]) -> dict[str, torch.Tensor]:
        """The processor's tensors for a batch of faces, restricted to what the model's forward accepts."""
        encoded = self.processor(faces=faces)
        return {name: value.to(self.device) if isinstance(value, torch.Tensor) else value
                for name, value in dict(encoded).items() if name in self._forward_names}

    @torch.no_grad()
    def predict_proba(self, faces: list[Face]) -> torch.Tensor:
        """Class probabilities (B, K) of a batch of faces."""
        logits = self.model(**self.preprocess(faces)).logits
        return logits.float().softmax(dim=-1).cpu()

    def postprocess(self, probabilities: torch.Tensor, top_k: int | None = None) -> list[dict[str, Any]]:
        """Sorted ``{"label", "score"}`` dicts of one probability vector, the best ``top_k`` of them."""
        order = torch.argsort(probabilities, descending=True).tolist()
        if top_k is not None:
            order = order[:max(int(top_k), 0)]
        return [{"label": self.labels[index], "score": float(probabilities[index])} for index in order]


def pipeline(task: str = "expression-recognition", model: str | PathLike | torch.nn.Module | None = None,
             processor: Any = None, *, device: str | torch.device | None = None, top_k: int | None = None,
             batch_size: int = 8, **model_kwargs: Any) -> ExpressionRecognitionPipeline:
    """Build an expression-recognition pipeline from a model folder, a Hub id or a model instance.

    A folder holding a PEFT adapter (``adapter_config.json``) is loaded on top of its base model. The processor
    is loaded from the same folder when it saved one, otherwise the model class's default processor is built from
    the model config.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown pipeline task {task!r}; supported: {', '.join(TASKS)}")
    if model is None:
        raise ConfigError("pipeline needs model=<folder, Hub id or model instance>")
    source = None if isinstance(model, torch.nn.Module) else resolve_source(model)
    if source is not None:
        model = load_model(source, **model_kwargs)
    if processor is None:
        processor = load_processor(model, source)
    return ExpressionRecognitionPipeline(model, processor, device=device, top_k=top_k, batch_size=batch_size)


#: Files of a Hub repository the pipeline needs (weights, configs, processor settings); never pickles.
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.py", "*.txt", "*.jinja"]


def resolve_source(model: str | PathLike) -> str:
    """A local folder for a model argument: the folder itself, or the snapshot of a Hub repository (downloaded
    once, then read from the cache; with ``HF_HUB_OFFLINE=1`` only the cache is used)."""
    path = Path(model)
    if path.is_dir():
        return str(path)
    if path.exists() or str(model).count("/") != 1:
        raise ConfigError("model must be a folder written by save_pretrained or a Hub id ORG/NAME", model)
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id=str(model), allow_patterns=SNAPSHOT_PATTERNS)


def _config_dict(source: str) -> dict[str, Any]:
    """config.json of a model folder as a dict (no model class needed)."""
    config_file = Path(source) / "config.json"
    if not config_file.is_file():
        raise ConfigError("no config.json; is this a folder written by save_pretrained?", source)
    return json.loads(config_file.read_text())


def load_model(source: str | PathLike, **kwargs: Any) -> torch.nn.Module:
    """A facet-vlm model from a folder or Hub id; PEFT adapter folders are applied to their base model."""
    source = resolve_source(source)
    path = Path(source)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        adapter = json.loads((path / "adapter_config.json").read_text())
        base_source = adapter.get("base_model_name_or_path")
        if not base_source:
            raise ConfigError("adapter_config.json names no base_model_name_or_path", path / "adapter_config.json")
        base = load_model(base_source, **kwargs)
        return PeftModel.from_pretrained(base, path).merge_and_unload()
    config = _config_dict(source)
    for name in config.get("architectures") or []:
        entry = entry_for_class(name)
        if entry is not None and name == entry.model_name:
            return entry.model_class.from_pretrained(source, **kwargs)
        if entry is not None and name == entry.auto_model_name:
            return entry.auto_model_class.from_pretrained(source, **kwargs)
    raise ConfigError(f"config.json names no facet-vlm model class (architectures={config.get('architectures')})",
                      source)


def load_processor(model: torch.nn.Module, source: str | None = None) -> Any:
    """The processor saved next to the model (``processor_config.json``), else the registry's processor of the
    model's type built from its config."""
    entry = MODEL_REGISTRY.get(getattr(model.config, "model_type", None))
    if entry is None:
        raise ConfigError(f"no processor registered for {type(model).__name__}; pass processor=...")
    if source is not None:
        return entry.processor_class.from_pretrained(source)
    return entry.processor_class.from_config(model.config)


__all__ = ["ExpressionRecognitionPipeline", "load_model", "load_processor", "pipeline", "resolve_source"]
