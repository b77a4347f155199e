"""AFNet-M: 2D+3D facial expression recognition with mask attention and importance-weight fusion.

Two ResNet-style CNN branches, one on the 2D texture (B, 3, H, W), one on the 3D maps of the frontal view (B, 4, H, W:
depth + surface normals). After chosen stages:

* **Mask attention** (both branches): the region masks (eyes, brows, nose, mouth; B, R, H, W) are resized to the
  stage resolution and concatenated with the feature map; a small conv net (`mask_conv1`, `mask_conv2`) followed by a
  mask-weighted average pool (weights = the union of the regions) gives a descriptor from which two linear layers
  predict per-channel vectors γ (scale) and β (shift); the features become x·(1+γ)+β (FiLM-like). γ and β start at
  zero. With `mask_spatial_weighting` the modulated maps are then weighted per position by b + (1 - b)·m (m = union
  of the regions, b = `mask_background_weight`), so that the network focuses on the salient regions: features inside
  a region pass, features outside every region are scaled by b. Without masks a region template is used: Gaussian
  ellipses at the mean face positions of the four regions in the aligned frontal view (the same mean face as
  `facet_vlm.geometry.region_masks` for the default 90 mm crop), learned unless `learnable_template=False`.
* **Importance-weight fusion**: global-average-pooled features of both branches → MLP → softmax over the two
  modalities (per sample); fused = w_2d·x_2d + w_3d·x_3d. The fused map is added back to both branches (x_m ← x_m +
  fused), so the next stages see the shared evidence while keeping their modality-specific path. The last stage is
  always fused and its fused map feeds the classifier. Fusion stages outside `importance_weight_stages` (the last
  one included) use fixed equal weights w_2d = w_3d = 0.5 instead.

This file imports only torch and transformers (plus its sibling configuration file) so that it ships as Hub remote code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import custom_object_save
from transformers.modeling_outputs import ModelOutput

from .configuration_afnet_m import AFNetMConfig

# (column, row, half-width, half-height) of every ellipse, as fractions of the aligned frontal view.
TEMPLATE_ELLIPSES: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "eyes": ((0.331, 0.311, 0.113, 0.062), (0.669, 0.311, 0.113, 0.062)),
    "brows": ((0.319, 0.217, 0.117, 0.041), (0.681, 0.217, 0.117, 0.041)),
    "nose": ((0.5, 0.448, 0.102, 0.137),),
    "mouth": ((0.5, 0.697, 0.174, 0.065),),
}


def region_template(size: int, num_regions: int = 4, softness: float = 0.3) -> torch.Tensor:
    """Default region masks (num_regions, size, size) in [0, 1]: eyes, brows, nose, mouth of a mean aligned face.

    Each region is 1 inside its ellipses with a Gaussian fall-off (σ = `softness` ellipse radii) outside. For a
    number of regions other than 4 the template covers the whole image (every mask is 1).
    """
    if num_regions != len(TEMPLATE_ELLIPSES):
        return torch.ones(num_regions, size, size)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    row, col = torch.meshgrid(coords, coords, indexing="ij")
    masks = []
    for ellipses in TEMPLATE_ELLIPSES.values():
        mask = torch.zeros(size, size)
        for center_col, center_row, half_width, half_height in ellipses:
            radius = torch.sqrt(((col - center_col) / half_width) ** 2 + ((row - center_row) / half_height) ** 2)
            mask = torch.maximum(mask, torch.exp(-0.5 * ((radius - 1).clamp_min(0) / softness) ** 2))
        masks.append(mask)
    return torch.stack(masks)


@dataclass
class AFNetMModelOutput(ModelOutput):
    """Output of [`AFNetMModel`]: the fused features without a class head.

    Args:
        pooled_output: (B, hidden_sizes[-1]) pooled fused features of the last stage (the embedding).
        modality_weights: (B, num_fusion_stages, 2) modality weights (texture, geometry) per fusion stage.
        texture_hidden_states / geometry_hidden_states: with `output_hidden_states`, each branch's feature maps after
            every stage (after mask attention and fusion).
    """

    pooled_output: torch.FloatTensor | None = None
    modality_weights: torch.FloatTensor | None = None
    texture_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    geometry_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class AFNetMOutput(ModelOutput):
    """Output of [`AFNetMForExpressionRecognition`].

    Args:
        loss: cross-entropy with label smoothing (when `labels` are given).
        logits: (B, num_labels).
        modality_weights: (B, num_fusion_stages, 2) modality weights (texture, geometry) per fusion stage: the
            softmax importance weights, or 0.5 each at stages outside `importance_weight_stages`.
        pooled_output: (B, hidden_sizes[-1]) pooled fused features of the last stage (the embedding).
        texture_hidden_states / geometry_hidden_states: with `output_hidden_states`, each branch's feature maps after
            every stage (after mask attention and fusion).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    modality_weights: torch.FloatTensor | None = None
    pooled_output: torch.FloatTensor | None = None
    texture_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    geometry_hidden_states: tuple[torch.FloatTensor, ...] | None = None


class AFNetMBasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs (`conv1`, `conv2`) with batch norm and a 1×1 `shortcut_conv` on change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, eps: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=eps)
        self.shortcut_conv = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut_conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        if self.shortcut_conv is not None:
            residual = self.shortcut_bn(self.shortcut_conv(hidden_states))
        hidden_states = F.relu(self.bn1(self.conv1(hidden_states)))
        hidden_states = self.bn2(self.conv2(hidden_states))
        return F.relu(hidden_states + residual)


class AFNetMBranch(nn.Module):
    """A ResNet-style CNN: stem (7×7 stride-2 `stem_conv` + max-pool) and stages of basic blocks."""

    def __init__(self, config: AFNetMConfig, in_channels: int):
        super().__init__()
        eps = config.batch_norm_eps
        self.stem_conv = nn.Conv2d(in_channels, config.embedding_size, 7, stride=2, padding=3, bias=False)
        self.stem_bn = nn.BatchNorm2d(config.embedding_size, eps=eps)
        stages = []
        channels = config.embedding_size
        for index, (size, depth) in enumerate(zip(config.hidden_sizes, config.depths)):
            stride = 1 if index == 0 else 2
            blocks = [AFNetMBasicBlock(channels, size, stride, eps)]
            blocks += [AFNetMBasicBlock(size, size, 1, eps) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = size
        self.stages = nn.ModuleList(stages)

    def stem(self, values: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.stem_bn(self.stem_conv(values))), 3, stride=2, padding=1)


def salient_region_weights(masks: torch.Tensor, background_weight: float) -> torch.Tensor:
    """Spatial weights (B, 1, h, w) from region masks (B, R, h, w): b + (1 - b)·m with m the union (pixel-wise
    maximum, clipped to [0, 1]) of the regions; 1 inside a region, b = `background_weight` outside every region."""
    union = masks.amax(dim=1, keepdim=True).clamp(0.0, 1.0)
    return background_weight + (1.0 - background_weight) * union


class AFNetMMaskAttention(nn.Module):
    """Region masks + features → per-channel scale γ and shift β, then (with `mask_spatial_weighting`) a spatial
    weight per position from the regions; returns (x·(1+γ)+β)·(b + (1 - b)·m)."""

    def __init__(self, channels: int, config: AFNetMConfig):
        super().__init__()
        hidden = config.mask_hidden_size
        self.spatial_weighting = config.mask_spatial_weighting
        self.background_weight = config.mask_background_weight
        self.mask_conv1 = nn.Conv2d(channels + config.num_regions, hidden, 3, padding=1)
        self.mask_conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.gamma_proj = nn.Linear(hidden, channels)
        self.beta_proj = nn.Linear(hidden, channels)
        self.gamma_proj.zero_init = self.beta_proj.zero_init = True

    def forward(self, hidden_states: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden_states (B, C, h, w), masks (B, R, h, w) → (modulated features, γ (B, C))."""
        descriptor = F.relu(self.mask_conv2(F.relu(self.mask_conv1(torch.cat([hidden_states, masks], dim=1)))))
        weight = masks.amax(dim=1, keepdim=True) + 1e-3
        pooled = (descriptor * weight).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
        gamma = self.gamma_proj(pooled)
        beta = self.beta_proj(pooled)
        modulated = hidden_states * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        if self.spatial_weighting:
            modulated = modulated * salient_region_weights(masks, self.background_weight)
        return modulated, gamma


class AFNetMImportanceFusion(nn.Module):
    """Pooled features of both branches → softmax importance weights per modality → weighted sum of the maps."""

    def __init__(self, channels: int, config: AFNetMConfig):
        super().__init__()
        self.weight_fc1 = nn.Linear(2 * channels, config.fusion_hidden_size)
        self.weight_fc2 = nn.Linear(config.fusion_hidden_size, 2)

    def forward(self, texture: torch.Tensor, geometry: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.cat([texture.mean(dim=(2, 3)), geometry.mean(dim=(2, 3))], dim=-1)
        weights = self.weight_fc2(F.relu(self.weight_fc1(pooled))).softmax(dim=-1)
        fused = weights[:, 0, None, None, None] * texture + weights[:, 1, None, None, None] * geometry
        return fused, weights


def equal_weight_fusion(texture: torch.Tensor, geometry: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ablation of importance-weight fusion: fused = 0.5·x_2d + 0.5·x_3d; weights (B, 2) all 0.5."""
    return 0.5 * (texture + geometry), texture.new_full((texture.shape[0], 2), 0.5)


class AFNetMPreTrainedModel(PreTrainedModel):
    config_class = AFNetMConfig
    base_model_prefix = "afnet_m"
    #: config.json's ``auto_map`` (Hub remote code): each Auto class and the class of this file it loads.
    auto_classes = {"AutoModel": "AFNetMModel",
                    "AutoModelForImageClassification": "AFNetMForExpressionRecognition"}
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            # γ/β heads start at zero so that mask attention starts as the identity
            std = 0.0 if getattr(module, "zero_init", False) else self.config.initializer_range
            init.normal_(module.weight, std=std)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            super()._init_weights(module)
        elif isinstance(module, AFNetMModel):
            config = self.config
            init.copy_(module.region_template, region_template(config.template_size, config.num_regions))

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained` with Hub remote code: this file and its sibling files are copied next to
        the weights, and ``config.json``'s ``auto_map`` names the config class and every class of `auto_classes`, so
        that ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` works where this package is not installed.
        This is the one place that writes ``auto_map``; `facet_vlm.registry` maps the same classes for local use."""
        module = type(self).__module__.rsplit(".", 1)[-1]
        config_module = type(self.config).__module__.rsplit(".", 1)[-1]
        self.config.auto_map = {"AutoConfig": f"{config_module}.{type(self.config).__name__}",
                                **{auto: f"{module}.{name}" for auto, name in self.auto_classes.items()}}
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            custom_object_save(self, save_directory)


class AFNetMModel(AFNetMPreTrainedModel):
    """AFNet-M without a class head: both CNN branches, mask attention and importance-weight fusion; returns the pooled
    fused features of the last stage (what `AutoModel` loads).

    `AFNetMForExpressionRecognition` subclasses it and adds the classifier, so the weight names of both are the same
    (a recognition model's folder loads into `AFNetMModel`, its classifier left out).
    """

    def __init__(self, config: AFNetMConfig):
        super().__init__(config)
        stack = 2 if config.neutral_reference == "difference" else 1
        self.texture_branch = AFNetMBranch(config, config.num_channels * stack)
        self.geometry_branch = AFNetMBranch(config, config.geometry_channels * stack)
        masked = config.mask_attention_stages
        self.texture_mask_attention = nn.ModuleDict(
            {str(stage): AFNetMMaskAttention(config.hidden_sizes[stage], config) for stage in masked}
        )
        self.geometry_mask_attention = nn.ModuleDict(
            {str(stage): AFNetMMaskAttention(config.hidden_sizes[stage], config) for stage in masked}
        )
        self.importance_fusion = nn.ModuleDict(
            {
                str(stage): AFNetMImportanceFusion(config.hidden_sizes[stage], config)
                for stage in config.importance_weight_stages
            }
        )
        template = region_template(config.template_size, config.num_regions)
        if config.learnable_template:
            self.region_template = nn.Parameter(template)
        else:
            self.register_buffer("region_template", template)
        if type(self) is AFNetMModel:
            self.post_init()

    def _check_inputs(
        self, pixel_values: torch.Tensor, geometry_values: torch.Tensor, region_masks: torch.Tensor | None,
        neutral_pixel_values: torch.Tensor | None = None, neutral_geometry_values: torch.Tensor | None = None,
    ) -> None:
        config = self.config
        if config.neutral_reference != "none":
            if neutral_pixel_values is None or neutral_geometry_values is None:
                raise ValueError(
                    f"this AFNet-M has neutral_reference={config.neutral_reference!r}: pass neutral_pixel_values "
                    "and neutral_geometry_values, the same person's neutral scan rendered by the processor "
                    "(processor(faces, neutral_faces=...); the pipeline's neutral=... argument)"
                )
            for name, neutral, values in (("neutral_pixel_values", neutral_pixel_values, pixel_values),
                                          ("neutral_geometry_values", neutral_geometry_values, geometry_values)):
                if neutral.shape != values.shape:
                    raise ValueError(f"{name} {tuple(neutral.shape)} must have the shape of its expressive input "
                                     f"{tuple(values.shape)}")
        if pixel_values.ndim != 4 or pixel_values.shape[1] != config.num_channels:
            raise ValueError(f"pixel_values must be (B, {config.num_channels}, H, W), got {tuple(pixel_values.shape)}")
        if geometry_values.ndim != 4 or geometry_values.shape[1] != config.geometry_channels:
            raise ValueError(
                f"geometry_values must be (B, {config.geometry_channels}, H, W) (depth + normal xyz), got "
                f"{tuple(geometry_values.shape)}"
            )
        if geometry_values.shape[0] != pixel_values.shape[0] or geometry_values.shape[2:] != pixel_values.shape[2:]:
            raise ValueError(
                f"pixel_values {tuple(pixel_values.shape)} and geometry_values {tuple(geometry_values.shape)} must "
                "share batch size and resolution (both are the frontal view)"
            )
        if region_masks is not None and (
            region_masks.ndim != 4
            or region_masks.shape[0] != pixel_values.shape[0]
            or region_masks.shape[1] != config.num_regions
        ):
            raise ValueError(
                f"region_masks must be (B, {config.num_regions}, H, W) with B={pixel_values.shape[0]}, got "
                f"{tuple(region_masks.shape)}"
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        geometry_values: torch.Tensor,
        region_masks: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        neutral_pixel_values: torch.Tensor | None = None,
        neutral_geometry_values: torch.Tensor | None = None,
        **kwargs,
    ) -> AFNetMModelOutput:
        """pixel_values (B, 3, H, W) RGB in [0, 1]; geometry_values (B, 4, H, W) depth + normals; region_masks
        (B, R, H, W) in [0, 1] or None (template); neutral_pixel_values / neutral_geometry_values: the neutral
        scan's inputs, same shapes (needed with `neutral_reference="difference"`, ignored otherwise)."""
        self._check_inputs(pixel_values, geometry_values, region_masks, neutral_pixel_values, neutral_geometry_values)
        config = self.config
        if config.normalize_pixels:
            mean = pixel_values.new_tensor(config.image_mean).view(1, -1, 1, 1)
            std = pixel_values.new_tensor(config.image_std).view(1, -1, 1, 1)
            pixel_values = (pixel_values - mean) / std
            if neutral_pixel_values is not None:
                neutral_pixel_values = (neutral_pixel_values.to(pixel_values.dtype) - mean) / std
        if config.neutral_reference == "difference":
            gain = config.neutral_difference_gain
            pixel_values = torch.cat([pixel_values, gain * (pixel_values - neutral_pixel_values.to(pixel_values))], 1)
            geometry_values = torch.cat(
                [geometry_values, gain * (geometry_values - neutral_geometry_values.to(geometry_values))], 1
            )
        if region_masks is None:
            region_masks = self.region_template.unsqueeze(0).expand(pixel_values.shape[0], -1, -1, -1)
        region_masks = region_masks.to(pixel_values.dtype)
        if config.channels_last:  # activations in NHWC; convolutions then produce NHWC and adapt the small weights
            layout = torch.channels_last
            pixel_values, geometry_values, region_masks = (
                values.contiguous(memory_format=layout) for values in (pixel_values, geometry_values, region_masks)
            )

        texture = self.texture_branch.stem(pixel_values)
        geometry = self.geometry_branch.stem(geometry_values.to(pixel_values.dtype))
        texture_states, geometry_states, modality_weights = [], [], []
        fused = None
        stages = zip(self.texture_branch.stages, self.geometry_branch.stages)
        for index, (texture_stage, geometry_stage) in enumerate(stages):
            texture, geometry = texture_stage(texture), geometry_stage(geometry)
            key = str(index)
            if key in self.texture_mask_attention:
                masks = F.interpolate(region_masks, size=texture.shape[2:], mode="bilinear", align_corners=False)
                texture, _ = self.texture_mask_attention[key](texture, masks)
                geometry, _ = self.geometry_mask_attention[key](geometry, masks)
            if index in config.fusion_stages and config.input_modality != "both":  # single-modality ablation
                use_2d = config.input_modality == "2d"
                fused = texture if use_2d else geometry
                weights = texture.new_tensor([1.0, 0.0] if use_2d else [0.0, 1.0]).expand(texture.shape[0], 2)
                modality_weights.append(weights)
            elif index in config.fusion_stages:
                if key in self.importance_fusion:
                    fused, weights = self.importance_fusion[key](texture, geometry)
                else:
                    fused, weights = equal_weight_fusion(texture, geometry)
                modality_weights.append(weights)
                if index < len(config.hidden_sizes) - 1:
                    texture, geometry = texture + fused, geometry + fused
            if output_hidden_states:
                texture_states.append(texture)
                geometry_states.append(geometry)

        return AFNetMModelOutput(
            pooled_output=fused.mean(dim=(2, 3)),
            modality_weights=torch.stack(modality_weights, dim=1),
            texture_hidden_states=tuple(texture_states) if output_hidden_states else None,
            geometry_hidden_states=tuple(geometry_states) if output_hidden_states else None,
        )


class AFNetMForExpressionRecognition(AFNetMModel):
    """AFNet-M with a linear classifier on the pooled fused features of the last stage.

    A static model: on a sequence data set (BU-4DFE, BP4D, 4DME) it sees one frame per sequence, the annotated apex
    or, where no annotation names it, the frame farthest from the first (``facet_vlm.data.sequences.apex_rows``).

    LoRA: `target_modules=["conv1", "conv2"]` adapts every basic block of both branches (add `"stem_conv"`,
    `"mask_conv1"`, `"mask_conv2"` for more); keep batch norm in eval mode while fine-tuning so that the adapter alone
    reproduces the tuned model (PEFT saves adapters, not running statistics).

    Example:
    ```python
    >>> import torch
    >>> from couple import AFNetMConfig, AFNetMForExpressionRecognition
    >>> model = AFNetMForExpressionRecognition(AFNetMConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
    ...     num_labels=6))
    >>> out = model(pixel_values=torch.rand(2, 3, 32, 32), geometry_values=torch.rand(2, 4, 32, 32),
    ...     labels=torch.tensor([1, 4]))
    >>> out.logits.shape, out.modality_weights.shape
    (torch.Size([2, 6]), torch.Size([2, 1, 2]))
    ```
    """

    def __init__(self, config: AFNetMConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.classifier = nn.Linear(config.hidden_sizes[-1], config.num_labels)
        self.post_init()

    def set_labels(self, labels: list[str] | tuple[str, ...], keep_known_classes: bool = True) -> None:
        """Switch to a new class set, e.g. to fine-tune a pretrained model on a data set with other classes.

        The classifier gets one row per class of `labels`, initialised as in a new model; with `keep_known_classes`
        the rows of the classes this model already has (matched by name, in any order) are copied over. Both
        branches, mask attention and fusion are untouched. `config.id2label`/`label2id` follow the new classes.
        """
        labels = list(labels)
        known = {name: index for index, name in self.config.id2label.items()}
        old = self.classifier
        head = nn.Linear(old.in_features, len(labels)).to(device=old.weight.device, dtype=old.weight.dtype)
        self._init_weights(head)
        with torch.no_grad():
            for new, name in enumerate(labels):
                if keep_known_classes and name in known:
                    head.weight[new] = old.weight[known[name]]
                    head.bias[new] = old.bias[known[name]]
        self.classifier = head
        self.config.id2label = dict(enumerate(labels))
        self.config.label2id = {name: index for index, name in enumerate(labels)}

    def forward(
        self,
        pixel_values: torch.Tensor,
        geometry_values: torch.Tensor,
        region_masks: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        neutral_pixel_values: torch.Tensor | None = None,
        neutral_geometry_values: torch.Tensor | None = None,
        **kwargs,
    ) -> AFNetMOutput:
        """pixel_values (B, 3, H, W) RGB in [0, 1]; geometry_values (B, 4, H, W) depth + normals; region_masks
        (B, R, H, W) in [0, 1] or None (template); labels (B,) class indices; neutral_pixel_values /
        neutral_geometry_values: the neutral scan's inputs (with `neutral_reference="difference"`)."""
        features = super().forward(pixel_values, geometry_values, region_masks,
                                   output_hidden_states=output_hidden_states,
                                   neutral_pixel_values=neutral_pixel_values,
                                   neutral_geometry_values=neutral_geometry_values)
        logits = self.classifier(self.dropout(features.pooled_output))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels.to(logits.device).long(),
                                   label_smoothing=self.config.label_smoothing)
        return AFNetMOutput(
            loss=loss,
            logits=logits,
            modality_weights=features.modality_weights,
            pooled_output=features.pooled_output,
            texture_hidden_states=features.texture_hidden_states,
            geometry_hidden_states=features.geometry_hidden_states,
        )


__all__ = [
    "AFNetMForExpressionRecognition",
    "AFNetMModel",
    "AFNetMModelOutput",
    "AFNetMOutput",
    "AFNetMPreTrainedModel",
    "equal_weight_fusion",
    "region_template",
    "salient_region_weights",
]
