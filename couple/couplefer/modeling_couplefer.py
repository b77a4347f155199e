"""CoupleFER: 2D+3D facial expression recognition with layer-wise 2D→3D prompts (CouPle) and dual-level supervision.

Image branch: a CLIP vision transformer on the frontal texture, run layer by layer. Point branch: a transformer of the
same depth over point patches (farthest-point sampling of G centres, k nearest neighbours per centre, a mini-PointNet
embedding, an MLP positional embedding of the centres). At every layer l, a CouPle module pools the image tokens
entering layer l into P prompt tokens (attention pooling with P learned queries + projection), scales them by a learned
gate tanh(g_l), and appends them to the point tokens of layer l; the prompt outputs are dropped after the layer and
fresh prompts are made for the next one (deep-prompt style). Supervision is dual-level: sample level (cross-entropy on
the fused and branch heads, 2D↔3D InfoNCE) and cluster level (class prototypes, prototype-contrastive cross-entropy).

This file imports only torch and transformers (plus its sibling configuration file) so that it ships as Hub remote code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModel, PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import custom_object_save
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import CLIPEncoder, CLIPVisionEmbeddings, eager_attention_forward

from .configuration_couplefer import CoupleFERConfig


@dataclass
class CoupleFERModelOutput(ModelOutput):
    """Embeddings of both branches.

    Args:
        image_embeds: (B, projection_dim) projected image CLS embedding (not L2-normalised).
        point_embeds: (B, projection_dim) projected point embedding (CLS + max-pooled patches, not normalised).
        fused_embeds: (B, 2*projection_dim) for `fusion="concat"`, (B, projection_dim) for `"sum"`.
        image_last_hidden_state: (B, 1 + num_patches, vision hidden) image tokens after the last layer.
        point_last_hidden_state: (B, 1 + G, point_hidden_size) point tokens after the last layer.
        image_hidden_states / point_hidden_states: with `output_hidden_states`, the tokens entering every layer
            plus the final ones (prompts excluded).
        couple_gates: (num_layers,) tanh of the 2D→3D gates (zeros when `couple_mode="off"`).
    """

    image_embeds: torch.FloatTensor | None = None
    point_embeds: torch.FloatTensor | None = None
    fused_embeds: torch.FloatTensor | None = None
    image_last_hidden_state: torch.FloatTensor | None = None
    point_last_hidden_state: torch.FloatTensor | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    point_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    couple_gates: torch.FloatTensor | None = None


@dataclass
class CoupleFEROutput(ModelOutput):
    """Output of [`CoupleFERForExpressionRecognition`].

    Args:
        loss: total loss Σ weight·term over the enabled terms (when `labels` are given).
        logits: (B, num_labels) from the fused head (the prediction).
        image_logits / point_logits: (B, num_labels) from the branch heads.
        prototype_logits: (B, num_labels) cosine similarities to the class prototypes over the temperature.
        image_embeds / point_embeds / fused_embeds: see [`CoupleFERModelOutput`].
        ce_loss / branch_ce_loss / contrastive_loss / prototype_loss: the unweighted terms (None when the term's
            weight is 0 or no labels are given).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_logits: torch.FloatTensor | None = None
    point_logits: torch.FloatTensor | None = None
    prototype_logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    point_embeds: torch.FloatTensor | None = None
    fused_embeds: torch.FloatTensor | None = None
    ce_loss: torch.FloatTensor | None = None
    branch_ce_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    prototype_loss: torch.FloatTensor | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    point_hidden_states: tuple[torch.FloatTensor, ...] | None = None


def farthest_point_sampling(xyz: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Indices (B, num_samples) of farthest-point samples of `xyz` (B, N, 3).

    Batched: one vectorised update per sample. Starts from the point farthest from the centroid, so the result does
    not depend on the order of the points.
    """
    batch_size, num_points, _ = xyz.shape
    batch = torch.arange(batch_size, device=xyz.device)
    selected = torch.empty(batch_size, num_samples, dtype=torch.long, device=xyz.device)
    centroid = xyz.mean(dim=1, keepdim=True)
    farthest = (xyz - centroid).square().sum(-1).argmax(dim=1)
    min_distance = torch.full((batch_size, num_points), float("inf"), dtype=xyz.dtype, device=xyz.device)
    for step in range(num_samples):
        selected[:, step] = farthest
        distance = (xyz - xyz[batch, farthest].unsqueeze(1)).square().sum(-1)
        min_distance = torch.minimum(min_distance, distance)
        farthest = min_distance.argmax(dim=1)
    return selected


def knn_indices(xyz: torch.Tensor, centers: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, G, k) of the k points of `xyz` (B, N, 3) nearest to each of `centers` (B, G, 3)."""
    distance = torch.cdist(centers, xyz)
    return distance.topk(k, dim=-1, largest=False).indices


def gather_points(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """values (B, N, C) gathered at indices (B, ...) → (B, ..., C)."""
    batch_size = values.shape[0]
    flat = indices.reshape(batch_size, -1)
    gathered = torch.gather(values, 1, flat.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return gathered.reshape(*indices.shape, values.shape[-1])


def fan_in_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A linear layer initialised with std 1/sqrt(in_features) instead of `initializer_range`.

    Used where the input is raw coordinates (patch and position MLPs) or where the output is L2-normalised (the
    projections, as in CLIP): a 0.02 init would shrink the signal and blow up the gradients through the following
    LayerNorm or normalisation.
    """
    layer = nn.Linear(in_features, out_features, bias=bias)
    layer.fan_in_init = True
    return layer


def contrastive_loss(image_embeds: torch.Tensor, point_embeds: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: the image and point embeddings of one face are positives, other faces negatives."""
    image_embeds = F.normalize(image_embeds, dim=-1)
    point_embeds = F.normalize(point_embeds, dim=-1)
    logits = image_embeds @ point_embeds.t() / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


class CoupleFERAttention(nn.Module):
    """Multi-head attention with q_proj/k_proj/v_proj/out_proj (LoRA targets); self- or cross-attention.

    The kernel is the one `config._attn_implementation` selects from transformers' `ALL_ATTENTION_FUNCTIONS`
    ("sdpa" by default, "eager"), read at call time so that `set_attn_implementation` switches a built model.
    """

    def __init__(self, config: CoupleFERConfig, embed_dim: int, num_heads: int):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = hidden_states if context is None else context
        query = self._split(self.q_proj(hidden_states))
        key = self._split(self.k_proj(context))
        value = self._split(self.v_proj(context))
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        attended, _ = attention(self, query, key, value, None, scaling=self.scale)
        return self.out_proj(attended.reshape(hidden_states.shape[0], hidden_states.shape[1], -1))


class CoupleFERMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(hidden_states)))


class CoupleFERPointLayer(GradientCheckpointingLayer):
    """Pre-norm transformer layer of the point branch (recomputed in the backward pass after
    `model.activation_checkpointing_enable()`, like the CLIP layers of the image branch)."""

    def __init__(self, config: CoupleFERConfig):
        super().__init__()
        size = config.point_hidden_size
        self.layer_norm1 = nn.LayerNorm(size, eps=config.layer_norm_eps)
        self.self_attn = CoupleFERAttention(config, size, config.point_num_attention_heads)
        self.layer_norm2 = nn.LayerNorm(size, eps=config.layer_norm_eps)
        self.mlp = CoupleFERMLP(size, config.point_intermediate_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states))
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class PointPatchEmbedding(nn.Module):
    """Mini-PointNet: a shared MLP on every point of a patch, max-pool, the pooled feature appended to every point,
    a second shared MLP, max-pool again → one token per patch (Point-BERT/Point-MAE style, LayerNorm for BatchNorm)."""

    def __init__(self, config: CoupleFERConfig):
        super().__init__()
        width = config.point_embed_hidden_size
        extra = 1 if config.neutral_reference == "difference" else 0  # the offset from the neutral surface
        self.local_fc1 = fan_in_linear(config.point_input_dim + extra, width)
        self.local_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.local_fc2 = fan_in_linear(width, 2 * width)
        self.global_fc1 = fan_in_linear(4 * width, 4 * width)
        self.global_norm = nn.LayerNorm(4 * width, eps=config.layer_norm_eps)
        self.global_fc2 = fan_in_linear(4 * width, config.point_hidden_size)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (B, G, k, C) → tokens (B, G, point_hidden_size)."""
        local = self.local_fc2(F.gelu(self.local_norm(self.local_fc1(patches))))
        pooled = local.max(dim=2, keepdim=True).values.expand_as(local)
        features = torch.cat([pooled, local], dim=-1)
        features = self.global_fc2(F.gelu(self.global_norm(self.global_fc1(features))))
        return features.max(dim=2).values


class PointPositionEmbedding(nn.Module):
    """MLP from a patch centre (x, y, z) to a positional embedding."""

    def __init__(self, config: CoupleFERConfig):
        super().__init__()
        self.fc1 = fan_in_linear(3, config.point_embed_hidden_size)
        self.fc2 = fan_in_linear(config.point_embed_hidden_size, config.point_hidden_size)

    def forward(self, centers: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(centers)))


class CouPlePromptGenerator(nn.Module):
    """One CouPle module: tokens of one branch → P gated prompt tokens for the other branch.

    The layer-normed source tokens are projected to the target width (`input_proj`), P learned queries attend over
    them (attention pooling; its `out_proj` is the output projection), and the prompts are scaled by tanh(gate).
    Pooling at the target width keeps the module small (0.9 M parameters per layer for ViT-B → width 384).
    """

    def __init__(self, source_size: int, target_size: int, num_heads: int, config: CoupleFERConfig):
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(config.num_prompt_tokens, target_size))
        self.norm = nn.LayerNorm(source_size, eps=config.layer_norm_eps)
        self.input_proj = nn.Linear(source_size, target_size)
        self.pool_attn = CoupleFERAttention(config, target_size, num_heads)
        self.gate = nn.Parameter(torch.tensor(float(config.couple_gate_init)))

    def forward(self, source_tokens: torch.Tensor) -> torch.Tensor:
        queries = self.queries.unsqueeze(0).expand(source_tokens.shape[0], -1, -1)
        pooled = self.pool_attn(queries, context=self.input_proj(self.norm(source_tokens)))
        return pooled * torch.tanh(self.gate)


class CoupleFERImageEncoder(nn.Module):
    """The CLIP vision transformer, with the same submodule names as `CLIPVisionModel` so its weights load as is."""

    def __init__(self, config: CoupleFERConfig):
        super().__init__()
        vision_config = config.vision_config
        self.embeddings = CLIPVisionEmbeddings(vision_config)
        self.pre_layrnorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
        self.encoder = CLIPEncoder(vision_config)
        self.post_layernorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)


class CoupleFERPointEncoder(nn.Module):
    """Point patches → tokens, plus a CLS token; the transformer layers are driven by [`CoupleFERModel`]."""

    def __init__(self, config: CoupleFERConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PointPatchEmbedding(config)
        self.position_embed = PointPositionEmbedding(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.point_hidden_size))
        self.cls_position = nn.Parameter(torch.zeros(1, 1, config.point_hidden_size))
        self.layers = nn.ModuleList([CoupleFERPointLayer(config) for _ in range(config.num_hidden_layers)])
        self.post_layernorm = nn.LayerNorm(config.point_hidden_size, eps=config.layer_norm_eps)

    def embed(self, points: torch.Tensor, offsets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """points (B, N, C), offsets (B, N) from the neutral surface or None → (tokens (B, 1+G, D), positions
        (B, 1+G, D))."""
        config = self.config
        features = points[..., : config.point_input_dim]
        xyz = features[..., :3]
        if config.normalize_points:
            xyz = xyz - xyz.mean(dim=1, keepdim=True)
            scale = xyz.norm(dim=-1).amax(dim=1).clamp_min(1e-6)[:, None, None]
            xyz = xyz / scale
        else:
            scale = xyz.new_ones(())
        if offsets is not None:  # in the normalised cloud's units, like xyz
            features = torch.cat([features, config.neutral_difference_gain * offsets.unsqueeze(-1) / scale], dim=-1)
        with torch.no_grad():
            center_index = farthest_point_sampling(xyz.detach(), config.num_point_groups)
        centers = gather_points(xyz, center_index)
        with torch.no_grad():
            group_index = knn_indices(xyz.detach(), centers.detach(), config.point_group_size)
        local_xyz = gather_points(xyz, group_index) - centers.unsqueeze(2)
        patch_features = torch.cat([local_xyz, gather_points(features[..., 3:], group_index)], dim=-1)
        tokens = self.patch_embed(patch_features)
        positions = self.position_embed(centers)
        batch_size = points.shape[0]
        tokens = torch.cat([self.cls_token.expand(batch_size, -1, -1), tokens], dim=1)
        positions = torch.cat([self.cls_position.expand(batch_size, -1, -1), positions], dim=1)
        return tokens, positions


class CoupleFERPreTrainedModel(PreTrainedModel):
    config_class = CoupleFERConfig
    base_model_prefix = "couplefer"
    #: config.json's ``auto_map`` (Hub remote code): each Auto class and the class of this file it loads.
    auto_classes = {"AutoModel": "CoupleFERModel",
                    "AutoModelForImageClassification": "CoupleFERForExpressionRecognition"}
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["CLIPEncoderLayer", "CoupleFERPointLayer"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, nn.Linear) and getattr(module, "fan_in_init", False):
            init.normal_(module.weight, std=module.in_features**-0.5)
        elif isinstance(module, CLIPVisionEmbeddings):
            init.normal_(module.class_embedding, mean=0.0, std=module.embed_dim**-0.5)
            init.copy_(module.position_ids, torch.arange(module.num_positions).expand((1, -1)))
        elif isinstance(module, CoupleFERPointEncoder):
            init.normal_(module.cls_token, std=std)
            init.normal_(module.cls_position, std=std)
        elif isinstance(module, CouPlePromptGenerator):
            init.normal_(module.queries, std=std)
            init.constant_(module.gate, self.config.couple_gate_init)
        elif isinstance(module, CoupleFERForExpressionRecognition):
            init.normal_(module.prototypes, std=1.0)

    def get_image_encoder(self) -> CoupleFERImageEncoder:
        """The CLIP vision tower (state-dict compatible with `CLIPVisionModel`)."""
        base = getattr(self, self.base_model_prefix, self)
        return base.image_encoder

    @classmethod
    def from_clip(cls, name_or_path: str, **config_kwargs) -> CoupleFERPreTrainedModel:
        """Build a model whose image branch holds pretrained CLIP vision weights.

        `name_or_path` is a Hub id (e.g. `openai/clip-vit-base-patch16`) or a local folder saved by `CLIPModel` or
        `CLIPVisionModel`; `config_kwargs` set the other `CoupleFERConfig` fields. The rest is randomly initialised.
        """
        clip_vision = CLIPVisionModel.from_pretrained(name_or_path)
        vision_config = clip_vision.config.to_dict()
        config = CoupleFERConfig(vision_config=vision_config, **config_kwargs)
        model = cls(config)
        model.get_image_encoder().load_state_dict(clip_vision.state_dict())
        return model

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


class CoupleFERModel(CoupleFERPreTrainedModel):
    """Both branches coupled by CouPle; returns the branch embeddings and the fused one (no heads)."""

    def __init__(self, config: CoupleFERConfig):
        super().__init__(config)
        vision_config = config.vision_config
        if vision_config._attn_implementation is None:
            # the CLIP layers read the attention implementation from their own (sub-)config
            vision_config._attn_implementation_internal = config._attn_implementation
        image_size, point_size = vision_config.hidden_size, config.point_hidden_size
        self.image_encoder = CoupleFERImageEncoder(config)
        self.point_encoder = CoupleFERPointEncoder(config)
        depth = config.num_hidden_layers
        if config.couple_mode != "off":
            self.couple_2d_to_3d = nn.ModuleList(
                CouPlePromptGenerator(image_size, point_size, config.point_num_attention_heads, config)
                for _ in range(depth)
            )
        if config.couple_mode == "bidirectional":
            self.couple_3d_to_2d = nn.ModuleList(
                CouPlePromptGenerator(point_size, image_size, vision_config.num_attention_heads, config)
                for _ in range(depth)
            )
        if config.neutral_reference == "difference":
            # the texture difference from the neutral scan, embedded by its own patch convolution and added to the
            # patch tokens (CLIP's texture embedding keeps its shape, so pretrained vision weights still load)
            patch = vision_config.patch_size
            self.neutral_patch_embedding = nn.Conv2d(3, image_size, kernel_size=patch, stride=patch, bias=False)
        self.visual_projection = fan_in_linear(image_size, config.projection_dim, bias=False)
        self.point_projection = fan_in_linear(2 * point_size, config.projection_dim, bias=False)
        self.post_init()

    def _check_inputs(self, pixel_values: torch.Tensor, points: torch.Tensor,
                      neutral_pixel_values: torch.Tensor | None = None,
                      neutral_point_offsets: torch.Tensor | None = None) -> None:
        config = self.config
        if config.neutral_reference != "none":
            if neutral_pixel_values is None or neutral_point_offsets is None:
                raise ValueError(
                    f"this CoupleFER has neutral_reference={config.neutral_reference!r}: pass neutral_pixel_values "
                    "and neutral_point_offsets, made from the same person's neutral scan by the processor "
                    "(processor(faces, neutral_faces=...); the pipeline's neutral=... argument)"
                )
            if neutral_pixel_values.shape != pixel_values.shape:
                raise ValueError(f"neutral_pixel_values {tuple(neutral_pixel_values.shape)} must have the shape of "
                                 f"pixel_values {tuple(pixel_values.shape)}")
            if neutral_point_offsets.shape != points.shape[:2]:
                raise ValueError(f"neutral_point_offsets {tuple(neutral_point_offsets.shape)} must be (B, N) = "
                                 f"{tuple(points.shape[:2])}, one offset per point")
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (B, 3, H, W) RGB, got shape {tuple(pixel_values.shape)}")
        if points.ndim != 3 or points.shape[-1] not in (6, 9) or points.shape[-1] < config.point_input_dim:
            raise ValueError(
                f"points must be (B, N, 6 or 9) = xyz, normal[, rgb] with at least point_input_dim="
                f"{config.point_input_dim} columns, got shape {tuple(points.shape)}"
            )
        if points.shape[1] < max(config.num_point_groups, config.point_group_size):
            raise ValueError(
                f"points has {points.shape[1]} points per cloud; need at least num_point_groups="
                f"{config.num_point_groups} and point_group_size={config.point_group_size}"
            )
        if pixel_values.shape[0] != points.shape[0]:
            raise ValueError(f"batch sizes differ: pixel_values {pixel_values.shape[0]}, points {points.shape[0]}")

    def forward(
        self,
        pixel_values: torch.Tensor,
        points: torch.Tensor,
        neutral_pixel_values: torch.Tensor | None = None,
        neutral_point_offsets: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> CoupleFERModelOutput:
        """pixel_values (B, 3, H, W) RGB in [0, 1] (or CLIP-normalised if `normalize_pixels=False`); points (B, N,
        6 or 9) xyz, normal[, rgb]; neutral_pixel_values (B, 3, H, W) / neutral_point_offsets (B, N): the neutral
        scan's texture view and each point's offset from its surface (needed with `neutral_reference="difference"`,
        ignored otherwise)."""
        self._check_inputs(pixel_values, points, neutral_pixel_values, neutral_point_offsets)
        config = self.config
        if config.normalize_pixels:
            mean = pixel_values.new_tensor(config.image_mean).view(1, 3, 1, 1)
            std = pixel_values.new_tensor(config.image_std).view(1, 3, 1, 1)
            pixel_values = (pixel_values - mean) / std
            if neutral_pixel_values is not None:
                neutral_pixel_values = (neutral_pixel_values.to(pixel_values.dtype) - mean) / std
        image_encoder, point_encoder = self.image_encoder, self.point_encoder
        image_tokens = image_encoder.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        offsets = None
        if config.neutral_reference == "difference":
            difference = config.neutral_difference_gain * (pixel_values - neutral_pixel_values.to(pixel_values))
            difference = self.neutral_patch_embedding(difference.to(self.neutral_patch_embedding.weight.dtype))
            image_tokens = torch.cat([image_tokens[:, :1], image_tokens[:, 1:] + difference.flatten(2).transpose(1, 2)],
                                     dim=1)
            offsets = neutral_point_offsets.to(image_tokens.dtype)
        image_tokens = image_encoder.pre_layrnorm(image_tokens)
        point_tokens, point_positions = point_encoder.embed(points.to(image_tokens.dtype), offsets)
        num_image_tokens, num_point_tokens = image_tokens.shape[1], point_tokens.shape[1]
        image_states, point_states = [], []
        for index, (image_layer, point_layer) in enumerate(zip(image_encoder.encoder.layers, point_encoder.layers)):
            if output_hidden_states:
                image_states.append(image_tokens)
                point_states.append(point_tokens)
            point_sequence = point_tokens + point_positions
            image_sequence = image_tokens
            if config.couple_mode != "off":
                point_sequence = torch.cat([point_sequence, self.couple_2d_to_3d[index](image_tokens)], dim=1)
            if config.couple_mode == "bidirectional":
                image_sequence = torch.cat([image_sequence, self.couple_3d_to_2d[index](point_tokens)], dim=1)
            image_tokens = image_layer(image_sequence, None)[:, :num_image_tokens]
            point_tokens = point_layer(point_sequence)[:, :num_point_tokens]
        if output_hidden_states:
            image_states.append(image_tokens)
            point_states.append(point_tokens)

        image_embeds = self.visual_projection(image_encoder.post_layernorm(image_tokens[:, 0]))
        point_final = point_encoder.post_layernorm(point_tokens)
        point_pooled = torch.cat([point_final[:, 0], point_final[:, 1:].max(dim=1).values], dim=-1)
        point_embeds = self.point_projection(point_pooled)
        if config.fusion == "concat":
            fused_embeds = torch.cat([image_embeds, point_embeds], dim=-1)
        else:
            fused_embeds = image_embeds + point_embeds
        if config.couple_mode == "off":
            gates = torch.zeros(config.num_hidden_layers, device=image_embeds.device)
        else:
            gates = torch.stack([torch.tanh(module.gate) for module in self.couple_2d_to_3d])
        return CoupleFERModelOutput(
            image_embeds=image_embeds,
            point_embeds=point_embeds,
            fused_embeds=fused_embeds,
            image_last_hidden_state=image_tokens,
            point_last_hidden_state=point_tokens,
            image_hidden_states=tuple(image_states) if output_hidden_states else None,
            point_hidden_states=tuple(point_states) if output_hidden_states else None,
            couple_gates=gates,
        )


class CoupleFERForExpressionRecognition(CoupleFERPreTrainedModel):
    """CoupleFER with heads on the image, point and fused embeddings, class prototypes and the dual-level loss.

    A static model: on a sequence data set (BU-4DFE, BP4D, 4DME) it sees one frame per sequence, the annotated apex
    or, where no annotation names it, the frame farthest from the first (``facet_vlm.data.sequences.apex_rows``).

    loss = ce_loss_weight·CE(fused) + branch_ce_loss_weight·mean(CE(image), CE(point))
         + contrastive_loss_weight·InfoNCE(image, point) + prototype_loss_weight·CE(prototype_logits)
    A term whose weight is 0 is not computed (its field in the output is None).

    LoRA: `target_modules=["q_proj", "v_proj"]` adapts the attention of both branches and of the CouPle pooling
    (use a regex such as `r".*image_encoder.*(q_proj|v_proj)"` to restrict it to one branch).

    Example:
    ```python
    >>> import torch
    >>> from couple import CoupleFERConfig, CoupleFERForExpressionRecognition
    >>> config = CoupleFERConfig(vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    ...     "num_attention_heads": 2, "image_size": 32, "patch_size": 8}, point_hidden_size=32,
    ...     point_intermediate_size=64, point_num_attention_heads=2, num_point_groups=8, point_group_size=8,
    ...     projection_dim=16, num_labels=6)
    >>> model = CoupleFERForExpressionRecognition(config)
    >>> out = model(pixel_values=torch.rand(2, 3, 32, 32), points=torch.randn(2, 64, 6), labels=torch.tensor([0, 3]))
    >>> out.logits.shape
    torch.Size([2, 6])
    ```
    """

    def __init__(self, config: CoupleFERConfig):
        super().__init__(config)
        self.couplefer = CoupleFERModel(config)
        fused_size = config.projection_dim * (2 if config.fusion == "concat" else 1)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.image_classifier = nn.Linear(config.projection_dim, config.num_labels)
        self.point_classifier = nn.Linear(config.projection_dim, config.num_labels)
        self.classifier = nn.Linear(fused_size, config.num_labels)
        prototypes = torch.zeros(config.num_labels, fused_size)
        if config.prototype_mode == "learned":
            self.prototypes = nn.Parameter(prototypes)
        else:
            self.register_buffer("prototypes", prototypes)
        self.post_init()

    def set_labels(self, labels: list[str] | tuple[str, ...], keep_known_classes: bool = True) -> None:
        """Switch to a new class set, e.g. to fine-tune a pretrained model on a data set with other classes.

        The three classifiers (image, point, fused) and the class prototypes get one row per class of `labels`,
        initialised as in a new model; with `keep_known_classes` the rows of the classes this model already has
        (matched by name, in any order) are copied over. The towers, CouPle and the projections are untouched.
        `config.id2label`/`label2id` follow the new classes.
        """
        labels = list(labels)
        known = {name: index for index, name in self.config.id2label.items()}
        reference = self.classifier.weight
        rows = [(new, known[name]) for new, name in enumerate(labels) if keep_known_classes and name in known]
        for name in ("image_classifier", "point_classifier", "classifier"):
            old = getattr(self, name)
            head = nn.Linear(old.in_features, len(labels)).to(device=reference.device, dtype=reference.dtype)
            self._init_weights(head)
            with torch.no_grad():
                for new, previous in rows:
                    head.weight[new] = old.weight[previous]
                    head.bias[new] = old.bias[previous]
            setattr(self, name, head)
        old_prototypes = self.prototypes
        prototypes = old_prototypes.new_empty(len(labels), old_prototypes.shape[1])
        self.prototypes = nn.Parameter(prototypes) if isinstance(old_prototypes, nn.Parameter) else prototypes
        self._init_weights(self)  # its branch for this class initialises the prototypes (only)
        with torch.no_grad():
            for new, previous in rows:
                self.prototypes[new] = old_prototypes[previous]
        self.config.id2label = dict(enumerate(labels))
        self.config.label2id = {name: index for index, name in enumerate(labels)}

    def prototype_logits(self, fused_embeds: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each fused embedding to each class prototype, over the prototype temperature."""
        similarity = F.normalize(fused_embeds, dim=-1) @ F.normalize(self.prototypes, dim=-1).t()
        return similarity / self.config.prototype_temperature

    @torch.no_grad()
    def update_prototypes(self, fused_embeds: torch.Tensor, labels: torch.Tensor) -> None:
        """EMA step of the class centres present in the batch (`prototype_mode="ema"`).

        The batch's class centre is the normalised mean of its L2-normalised embeddings of that class. In distributed
        training the per-class sums and counts are summed over all processes (`torch.distributed.all_reduce`, when a
        process group is initialised) before the step, so every process applies the same update, the one a single
        process would make on the union of the processes' batches, and the prototype buffers stay identical.
        Every process must therefore call this in the same training steps (it does: every training forward with
        labels).
        """
        embeds = F.normalize(fused_embeds.detach().to(self.prototypes.dtype), dim=-1)
        labels = labels.to(embeds.device).long()
        sums = embeds.new_zeros(self.prototypes.shape).index_add_(0, labels, embeds)
        counts = embeds.new_zeros(len(self.prototypes)).index_add_(0, labels, embeds.new_ones(len(labels)))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            totals = torch.cat([sums, counts[:, None]], dim=1)
            torch.distributed.all_reduce(totals, op=torch.distributed.ReduceOp.SUM)
            sums, counts = totals[:, :-1], totals[:, -1]
        present = counts > 0
        momentum = self.config.prototype_momentum
        means = F.normalize(sums[present], dim=-1)
        current = F.normalize(self.prototypes[present], dim=-1)
        self.prototypes[present] = F.normalize(momentum * current + (1 - momentum) * means, dim=-1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        points: torch.Tensor,
        labels: torch.Tensor | None = None,
        neutral_pixel_values: torch.Tensor | None = None,
        neutral_point_offsets: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> CoupleFEROutput:
        """pixel_values (B, 3, H, W) RGB in [0, 1]; points (B, N, 6 or 9); labels (B,) class indices;
        neutral_pixel_values / neutral_point_offsets: the neutral scan's inputs (with `neutral_reference`)."""
        config = self.config
        outputs = self.couplefer(
            pixel_values,
            points,
            neutral_pixel_values=neutral_pixel_values,
            neutral_point_offsets=neutral_point_offsets,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
        )
        image_embeds, point_embeds, fused_embeds = outputs.image_embeds, outputs.point_embeds, outputs.fused_embeds
        logits = self.classifier(self.dropout(fused_embeds))
        image_logits = self.image_classifier(self.dropout(image_embeds))
        point_logits = self.point_classifier(self.dropout(point_embeds))
        prototype_logits = self.prototype_logits(fused_embeds)

        terms: dict[str, torch.Tensor | None] = dict.fromkeys(
            ("ce_loss", "branch_ce_loss", "contrastive_loss", "prototype_loss")
        )
        loss = None
        if config.input_modality != "both":  # single-modality ablation: one branch's head, its CE only
            logits = image_logits if config.input_modality == "image" else point_logits
            if labels is not None:
                terms["ce_loss"] = F.cross_entropy(logits, labels.to(logits.device).long(),
                                                   label_smoothing=config.label_smoothing)
                loss = terms["ce_loss"]
        elif labels is not None:
            labels = labels.to(logits.device).long()
            smoothing = config.label_smoothing
            if config.ce_loss_weight > 0:
                terms["ce_loss"] = F.cross_entropy(logits, labels, label_smoothing=smoothing)
            if config.branch_ce_loss_weight > 0:
                terms["branch_ce_loss"] = (
                    F.cross_entropy(image_logits, labels, label_smoothing=smoothing)
                    + F.cross_entropy(point_logits, labels, label_smoothing=smoothing)
                ) / 2
            if config.contrastive_loss_weight > 0:
                terms["contrastive_loss"] = contrastive_loss(image_embeds, point_embeds, config.contrastive_temperature)
            if config.prototype_loss_weight > 0:
                terms["prototype_loss"] = F.cross_entropy(prototype_logits, labels)
            weights = {
                "ce_loss": config.ce_loss_weight,
                "branch_ce_loss": config.branch_ce_loss_weight,
                "contrastive_loss": config.contrastive_loss_weight,
                "prototype_loss": config.prototype_loss_weight,
            }
            loss = sum(weights[name] * term for name, term in terms.items() if term is not None)
            if not torch.is_tensor(loss):
                loss = logits.new_zeros(())
            if config.prototype_mode == "ema" and self.training:
                self.update_prototypes(fused_embeds, labels)

        return CoupleFEROutput(
            loss=loss,
            logits=logits,
            image_logits=image_logits,
            point_logits=point_logits,
            prototype_logits=prototype_logits,
            image_embeds=image_embeds,
            point_embeds=point_embeds,
            fused_embeds=fused_embeds,
            image_hidden_states=outputs.image_hidden_states,
            point_hidden_states=outputs.point_hidden_states,
            **terms,
        )


__all__ = [
    "CoupleFERForExpressionRecognition",
    "CoupleFERModel",
    "CoupleFERPreTrainedModel",
    "contrastive_loss",
    "farthest_point_sampling",
    "knn_indices",
]
