"""FACET-VLM: text-guided multiview fusion of a CLIP backbone for 2D+3D and 4D facial expression recognition.

Pipeline: rendered views (B, V, C, H, W) -> every channel group of every view as a 3-channel image through one
shared CLIP vision tower -> projected view tokens -> CVSA (cross-view semantic aggregation: transformer layers over
view tokens + attention pooling = one view-consistent face embedding) -> MTGF (multiview text-guided fusion: the
class text embeddings query the view tokens = per-class view weights and a fused embedding per class) -> logits =
logit scale x cosine(fused embedding of class k, text embedding of class k). 4D sequences (B, T, V, C, H, W) add a
temporal transformer over the per-frame embeddings. With `neutral_reference="difference"` every image is also
compared with the same render of the person's neutral scan: the difference, embedded by its own patch stem, is added
to the tower's patch tokens (`FacetVLMConfig.neutral_reference`).

The class text embeddings come from prompts through the CLIP text tower: fixed prompt ensembles (templates x class
descriptions), or CoOp-style learned context vectors in front of each class description (`prompt_context_length`),
so that the text path learns even where no CLIP weights are at hand; `class_head="linear"` replaces the whole text
side by a linear classifier (the ablation).

This file is Hub remote code: it imports only torch, transformers and its sibling files. Loading open_clip checkpoints
(`from_clip("ViT-B-16/openai")`) uses the converter of `convert_open_clip_to_hf`, which imports `open_clip` on demand,
only for that call.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTextModel, CLIPVisionModel, PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import custom_object_save
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import eager_attention_forward
from transformers.utils import ModelOutput, logging

from .configuration_facet_vlm import CHANNEL_GROUP_WIDTHS, FacetVLMConfig, default_prompt_tokenizer, ensemble_prompts

logger = logging.get_logger(__name__)

LOGIT_SCALE_MAX = 100.0
#: Std of the random init of learned context vectors (CoOp's `nn.init.normal_(ctx_vectors, std=0.02)`).
CONTEXT_INIT_STD = 0.02
#: Parameter-name prefixes of the modules FACET-VLM adds to CLIP's towers (they start new in `from_clip`).
OWN_MODULES = ("cvsa.", "mtgf.", "temporal.", "prompt_context.", "linear_head.", "neutral_stem.")
#: Keys of the tower configs that fix the shapes of CLIP's weights; `from_clip` takes them from the checkpoint.
TOWER_SHAPE_KEYS = {
    "vision_config": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels"),
    "text_config": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                    "max_position_embeddings"),
}


@dataclass
class FacetVLMOutput(ModelOutput):
    """Output of FACET-VLM.

    Attributes:
        loss: total loss (cross-entropy + `consistency_weight` x consistency), when `labels` are given.
        logits: (B, K) scaled cosine similarities between the fused face embeddings and the class text embeddings.
        face_embeds: (B, D) view-consistent face embedding (CVSA pooling; over time for 4D input).
        view_embeds: (B, V, D) each view's own embedding: its projected CLIP embedding before CVSA lets the views
            attend to each other (channel groups averaged; averaged over frames for 4D input), so that view v depends
            on the pixels of view v alone.
        view_weights: (B, K, V) how much each class attends to each view (rows sum to 1; uniform without MTGF
            and with the linear head).
        text_embeds: (K, D) L2-normalised class text embeddings (prompt-ensemble means); None with
            `class_head="linear"`.
        view_logits: (B, V, K) logits of every single view from `view_embeds` (the view's own prediction), used by
            the consistency loss.
        ce_loss: the cross-entropy part of `loss`.
        consistency_loss: the (unweighted) multiview consistency part of `loss`.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    face_embeds: torch.Tensor | None = None
    view_embeds: torch.Tensor | None = None
    view_weights: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    view_logits: torch.Tensor | None = None
    ce_loss: torch.Tensor | None = None
    consistency_loss: torch.Tensor | None = None


def view_agreement_loss(logits: torch.Tensor, view_logits: torch.Tensor) -> torch.Tensor:
    """Mean over faces and views of KL(fused prediction || single-view prediction).

    The fused prediction is detached: the loss teaches each view to tell the expression on its own and does not
    pull the fused prediction toward weak views. logits (B, K), view_logits (B, V, K).
    """
    target = logits.detach().softmax(dim=-1).unsqueeze(1).expand_as(view_logits)
    return F.kl_div(view_logits.log_softmax(dim=-1), target, reduction="none").sum(-1).mean()


def class_margin_loss(view_embeds: torch.Tensor, labels: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """Metric term over the per-view embeddings of the whole batch: pairs of the same class are pulled together
    (cosine distance -> 0), pairs of different classes are pushed until their cosine distance exceeds `margin`.

    view_embeds (B, V, D), labels (B,) class ids.
    """
    batch, views, _ = view_embeds.shape
    embeds = F.normalize(view_embeds.reshape(batch * views, -1), dim=-1)
    pair_labels = labels.repeat_interleave(views)
    distance = 1.0 - embeds @ embeds.t()
    same = pair_labels[:, None] == pair_labels[None, :]
    not_self = ~torch.eye(len(pair_labels), dtype=torch.bool, device=labels.device)
    pull = distance[same & not_self]
    push = F.relu(margin - distance[~same])
    return (pull.mean() if pull.numel() else distance.new_zeros(())) + (
        push.mean() if push.numel() else distance.new_zeros(())
    )


def multiview_consistency_loss(
    logits: torch.Tensor,
    view_logits: torch.Tensor,
    view_embeds: torch.Tensor,
    labels: torch.Tensor | None = None,
    margin: float = 0.5,
) -> torch.Tensor:
    """Make the views of one face agree and keep classes apart.

    `view_agreement_loss` (every single view's prediction against the fused one) plus, when `labels` are given,
    `class_margin_loss` on the per-view embeddings. Both expect each view's own embedding and prediction, computed
    before cross-view aggregation (`FacetVLMOutput.view_embeds` / `view_logits`): after CVSA every view token has
    seen the other views, and agreement between them would say nothing about the single views.

    Args:
        logits: (B, K) fused logits. view_logits: (B, V, K). view_embeds: (B, V, D). labels: (B,) class ids, or
            None for the agreement term alone.
    """
    agreement = view_agreement_loss(logits, view_logits)
    if labels is None:
        return agreement
    return agreement + class_margin_loss(view_embeds, labels, margin)


def facet_vlm_loss(
    output: FacetVLMOutput, labels: torch.Tensor, config: FacetVLMConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Cross-entropy on the fused logits plus `config.consistency_weight` x `multiview_consistency_loss`; the margin
    term of the consistency loss only with `config.use_consistency_margin`.

    Returns (total, cross_entropy, consistency or None when the weight is 0).
    """
    ce = F.cross_entropy(output.logits, labels, label_smoothing=config.label_smoothing)
    if config.consistency_weight == 0:
        return ce, ce, None
    consistency = multiview_consistency_loss(
        output.logits,
        output.view_logits,
        output.view_embeds,
        labels if config.use_consistency_margin else None,
        margin=config.consistency_margin,
    )
    return ce + config.consistency_weight * consistency, ce, consistency


def sample_sequence_frames(
    num_total: int, num_frames: int, mode: str = "uniform", apex_index: int | None = None
) -> list[int]:
    """Indices of `num_frames` frames out of a clip of `num_total`, in temporal order.

    `"uniform"` spreads them evenly over the clip (BU-4DFE, BP4D). `"onset_apex_offset"` (micro-expressions, 4DME)
    spends half of them evenly between the onset (frame 0) and the apex and the rest between the apex and the offset
    (last frame), always including the apex; the apex defaults to the middle frame. Clips shorter than `num_frames`
    repeat frames.
    """
    if num_total < 1 or num_frames < 1:
        raise ValueError(f"num_total ({num_total}) and num_frames ({num_frames}) must be >= 1")
    last = num_total - 1
    if mode == "uniform":
        return [round(i * last / max(num_frames - 1, 1)) for i in range(num_frames)] if num_frames > 1 else [last // 2]
    if mode != "onset_apex_offset":
        raise ValueError(f"mode must be 'uniform' or 'onset_apex_offset', got {mode!r}")
    apex = last // 2 if apex_index is None else apex_index
    if not 0 <= apex <= last:
        raise ValueError(f"apex_index {apex_index} outside the clip of {num_total} frames")
    if num_frames == 1:
        return [apex]
    rising = (num_frames + 1) // 2
    falling = num_frames - rising
    indices = [round(i * apex / max(rising - 1, 1)) for i in range(rising)] if rising > 1 else [apex]
    indices += [round(apex + (i + 1) * (last - apex) / falling) for i in range(falling)]
    return indices


def attention_function(config: FacetVLMConfig):
    """The attention kernel `config._attn_implementation` selects from transformers' `ALL_ATTENTION_FUNCTIONS`
    ("sdpa", the default of `PreTrainedModel`, or "eager"), read at call time so that `set_attn_implementation`
    switches a built model."""
    return ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)


class FacetVLMAttention(nn.Module):
    """Multi-head attention with separate query and key/value inputs, through transformers' attention interface.

    The projections are named like CLIP's (`q_proj`, `k_proj`, `v_proj`, `out_proj`: LoRA targets). With
    `need_weights` it also returns the head-averaged attention probabilities, computed from q and k (Lq x Lk per
    head) so that they are the same pre-dropout probabilities whichever kernel ran (SDPA returns none).
    """

    def __init__(self, config: FacetVLMConfig, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.config = config
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = dropout
        self.is_causal = False
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(
        self, query: torch.Tensor, key_value: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query (N, Lq, D), key_value (N, Lk, D) -> output (N, Lq, D), weights (N, Lq, Lk) or None."""
        batch, query_len, _ = query.shape
        key_len = key_value.shape[1]

        def heads(x: torch.Tensor, length: int) -> torch.Tensor:
            return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        q = heads(self.q_proj(query), query_len)
        k = heads(self.k_proj(key_value), key_len)
        v = heads(self.v_proj(key_value), key_len)
        attended, _ = attention_function(self.config)(
            self, q, k, v, None, scaling=self.scale, dropout=self.dropout if self.training else 0.0
        )
        output = self.out_proj(attended.reshape(batch, query_len, self.embed_dim))
        if not need_weights:
            return output, None
        weights = torch.matmul(q, k.transpose(-1, -2)).mul(self.scale).softmax(dim=-1)
        return output, weights.mean(dim=1)


class FacetVLMMLP(nn.Module):
    def __init__(self, embed_dim: int, intermediate_size: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(hidden_states)))))


class FacetVLMEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer layer (self-attention + MLP), the building block of CVSA and the temporal model; its
    activations are recomputed in the backward pass after `model.activation_checkpointing_enable()`."""

    def __init__(self, config: FacetVLMConfig, num_heads: int):
        super().__init__()
        dim = config.projection_dim
        self.layer_norm1 = nn.LayerNorm(dim)
        self.self_attn = FacetVLMAttention(config, dim, num_heads, config.dropout)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.mlp = FacetVLMMLP(dim, config.cvsa_intermediate_size, config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        normed = self.layer_norm1(hidden_states)
        hidden_states = hidden_states + self.self_attn(normed, normed)[0]
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class FacetVLMAttentionPool(nn.Module):
    """Pool a token set with one learned query (single-head attention through transformers' attention interface).
    The result is a convex combination of the tokens themselves (no value projection), so it stays in CLIP's
    image-text space and is invariant to the order of the tokens."""

    def __init__(self, config: FacetVLMConfig):
        super().__init__()
        dim = config.projection_dim
        self.config = config
        self.is_causal = False
        self.query = nn.Parameter(torch.zeros(dim))
        self.layer_norm = nn.LayerNorm(dim)
        self.k_proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, L, D) -> pooled (N, D)."""
        batch, _, dim = tokens.shape
        keys = self.k_proj(self.layer_norm(tokens)).unsqueeze(1)
        query = self.query.view(1, 1, 1, dim).expand(batch, -1, -1, -1)
        pooled, _ = attention_function(self.config)(self, query, keys, tokens.unsqueeze(1), None, scaling=dim**-0.5)
        return pooled.reshape(batch, dim)


class CrossViewSemanticAggregation(nn.Module):
    """CVSA: view tokens (one per view x channel group, plus optional pooled patch tokens) attend to each other in
    `cvsa_layers` transformer layers and are attention-pooled into one view-consistent face embedding.

    Learned view and channel-group embeddings tell the layers which view and group a token comes from. Without them
    (`use_view_embeddings=False`) CVSA is a set function: permuting the views permutes its token outputs and leaves
    the face embedding unchanged.
    """

    def __init__(self, config: FacetVLMConfig):
        super().__init__()
        dim = config.projection_dim
        self.use_view_embeddings = config.use_view_embeddings
        if config.use_view_embeddings:
            self.view_embedding = nn.Embedding(config.num_views, dim)
            self.group_embedding = nn.Embedding(len(config.channels), dim)
        if config.cvsa_use_patch_tokens:
            self.patch_position_embedding = nn.Embedding(config.cvsa_patch_grid**2, dim)
        self.layers = nn.ModuleList(
            [FacetVLMEncoderLayer(config, config.cvsa_heads) for _ in range(config.cvsa_layers)]
        )
        self.post_layernorm = nn.LayerNorm(dim)
        self.pool = FacetVLMAttentionPool(config)

    def forward(
        self, view_tokens: torch.Tensor, patch_tokens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """view_tokens (N, V, G, D), patch_tokens (N, V, G, P, D) -> contextual view tokens (N, V, G, D) and the
        face embedding (N, D)."""
        batch, views, groups, dim = view_tokens.shape
        tokens = view_tokens
        if self.use_view_embeddings:
            tokens = tokens + self.view_embedding.weight[:views, None] + self.group_embedding.weight[None]
        sequence = [tokens.reshape(batch, views * groups, dim)]
        if patch_tokens is not None:
            patches = patch_tokens + self.patch_position_embedding.weight
            if self.use_view_embeddings:
                patches = patches + (self.view_embedding.weight[:views, None] + self.group_embedding.weight)[:, :, None]
            sequence.append(patches.reshape(batch, -1, dim))
        hidden_states = torch.cat(sequence, dim=1)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        hidden_states = self.post_layernorm(hidden_states) if self.layers else hidden_states
        face = self.pool(hidden_states)
        return hidden_states[:, : views * groups].reshape(batch, views, groups, dim), face


class MultiviewTextGuidedFusion(nn.Module):
    """MTGF: the class text embeddings are the queries of a cross-attention over the view tokens of a face.

    For class k the attention weights say which views (and channel groups) show evidence of that expression; the
    attended values, added to the CVSA face embedding, give a text-aligned fused embedding per class. Only the text
    embeddings change with the label set, so new classes need only new prompts.
    """

    def __init__(self, config: FacetVLMConfig):
        super().__init__()
        dim = config.projection_dim
        self.query_layernorm = nn.LayerNorm(dim)
        self.key_value_layernorm = nn.LayerNorm(dim)
        self.attention = FacetVLMAttention(config, dim, config.mtgf_heads, config.dropout)

    def forward(
        self, text_embeds: torch.Tensor, view_tokens: torch.Tensor, face_embeds: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """text_embeds (K, D), view_tokens (N, L, D), face_embeds (N, D) -> fused (N, K, D), weights (N, K, L)."""
        queries = self.query_layernorm(text_embeds).unsqueeze(0).expand(view_tokens.shape[0], -1, -1)
        attended, weights = self.attention(queries, self.key_value_layernorm(view_tokens), need_weights=True)
        return face_embeds.unsqueeze(1) + attended, weights


class FacetVLMTemporalTransformer(nn.Module):
    """Temporal model for 4D input: the frames relative to the first one (`config.frame_reference`), learned frame
    positions, `temporal_layers` transformer layers and attention pooling over frames (so that the apex of an
    expression can dominate)."""

    def __init__(self, config: FacetVLMConfig):
        super().__init__()
        self.num_frames = config.num_frames
        self.frame_reference = config.frame_reference
        dim = config.projection_dim
        self.reference_projection = nn.Linear(2 * dim, dim) if config.frame_reference == "append_first" else None
        self.position_embedding = nn.Embedding(config.num_frames, dim)
        self.layers = nn.ModuleList(
            [FacetVLMEncoderLayer(config, config.cvsa_heads) for _ in range(config.temporal_layers)]
        )
        self.pool = FacetVLMAttentionPool(config)

    def frame_inputs(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, T, D) -> what the transformer sees of each frame (N, T, D), by `config.frame_reference`:
        the frames themselves, their change since the first frame, or a projection of both."""
        if self.frame_reference == "none":
            return frames
        if frames.shape[1] < 2:
            raise ValueError(f"frame_reference={self.frame_reference!r} compares frames with the first one and needs "
                             f"at least 2 frames, got {frames.shape[1]}")
        change = frames - frames[:, :1]
        if self.frame_reference == "subtract_first":
            return change
        return self.reference_projection(torch.cat([frames, change], dim=-1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, T, D) -> (N, D)."""
        num_frames = frames.shape[1]
        if num_frames > self.num_frames:
            raise ValueError(f"got {num_frames} frames but the config allows num_frames={self.num_frames}")
        hidden_states = self.frame_inputs(frames) + self.position_embedding.weight[:num_frames]
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.pool(hidden_states)


class FacetVLMConvStem(nn.Module):
    """Convolutional patch stem (`patch_stem="conv"`): stride-2 3x3 convolutions with batch norm and GELU, then a
    1x1 convolution to the tower's hidden size. (N, 3, H, W) -> (N, hidden, H / patch, W / patch), the shape of CLIP's
    patch embedding, which it replaces."""

    def __init__(self, config: FacetVLMConfig):
        super().__init__()
        hidden = config.vision_config.hidden_size
        halvings = config.vision_config.patch_size.bit_length() - 1
        widths = config.conv_stem_channels or [max(8, hidden // 2 ** (halvings - 1 - i)) for i in range(halvings)]
        layers: list[nn.Module] = []
        in_channels = config.vision_config.num_channels
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.GELU()]
            in_channels = width
        self.layers = nn.Sequential(*layers)
        self.proj = nn.Conv2d(in_channels, hidden, 1)

    @property
    def weight(self) -> torch.Tensor:
        """The last convolution's weight (CLIP's embeddings read the stem's dtype from `patch_embedding.weight`)."""
        return self.proj.weight

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(self.layers(pixel_values))


class FacetVLMPromptContext(nn.Module):
    """CoOp's learned context (Zhou et al., IJCV 2022): `prompt_context_length` vectors in the text tower's
    token-embedding space that stand in for the template words of every prompt, one set shared by all classes or one
    per class (`prompt_context_class_specific`). They are inserted between the start token and the class
    description's tokens, so a prompt reads "[start] ctx_1 ... ctx_M description . [end]"."""

    def __init__(self, config: FacetVLMConfig):
        super().__init__()
        rows = config.num_labels if config.prompt_context_class_specific else 1
        self.class_specific = config.prompt_context_class_specific
        self.context = nn.Parameter(torch.zeros(rows, config.prompt_context_length, config.text_config.hidden_size))

    def forward(self, class_index: torch.Tensor) -> torch.Tensor:
        """The context of every prompt, (P, M, H), from the class of each prompt (P,)."""
        if self.class_specific:
            return self.context[class_index]
        return self.context.expand(len(class_index), -1, -1)


def resize_position_embedding(weight: torch.Tensor, grid: int, interpolation: str = "bicubic",
                              antialias: bool = True) -> torch.Tensor:
    """A ViT's position embeddings (1 + g^2, D) (class position first) resized to a grid x grid token grid.

    As open_clip's `resize_pos_embed` does when it loads a checkpoint into a tower of another image size (what
    `from_clip` uses): the class position is kept, the g x g patch positions are interpolated bicubically
    (`align_corners=False`, `antialias=True`) and an unchanged grid returns the weights as they are. transformers'
    CLIP `interpolate_pos_encoding` interpolates at run time without antialiasing (`antialias=False` gives its
    values; PyTorch's antialiased bicubic kernel differs from the plain one even when the grid grows).
    """
    old_grid = math.isqrt(weight.shape[0] - 1)
    if old_grid**2 != weight.shape[0] - 1:
        raise ValueError(f"position embeddings of {weight.shape[0]} rows are not a class position plus a square grid")
    if old_grid == grid:
        return weight
    patches = weight[1:].reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=(grid, grid), mode=interpolation, antialias=antialias,
                            align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(weight.dtype)
    return torch.cat([weight[:1], patches], dim=0)


class FacetVLMPreTrainedModel(PreTrainedModel):
    config_class = FacetVLMConfig
    base_model_prefix = "facet_vlm"
    #: config.json's ``auto_map`` (Hub remote code): each Auto class and the class of this file it loads.
    auto_classes = {"AutoModel": "FacetVLMModel",
                    "AutoModelForImageClassification": "FacetVLMForExpressionRecognition"}
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["CLIPEncoderLayer", "FacetVLMEncoderLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, FacetVLMModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            init.copy_(module.image_mean, torch.tensor(self.config.image_mean).view(1, 3, 1, 1))
            init.copy_(module.image_std, torch.tensor(self.config.image_std).view(1, 3, 1, 1))
            ids, mask, class_index = _prompt_tensors(self.config)
            init.copy_(module.prompt_input_ids, ids)
            init.copy_(module.prompt_attention_mask, mask)
            init.copy_(module.prompt_class_index, class_index)
            init.zeros_(module.class_text_embeds)
            module.text_embeds_stale = True
            if module.prompt_context is not None:
                module.init_prompt_context()
        elif isinstance(module, FacetVLMAttentionPool):
            init.normal_(module.query, std=std)
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

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

    @property
    def lora_towers(self) -> tuple[str, ...]:
        """Module names of the towers that `--peft lora` puts adapters into: the vision tower, and the text tower
        too with `config.text_tower_lora` (read by `facet_vlm.training.build.lora_config`)."""
        text = ("text_model",) if self.config.text_tower_lora and self.config.uses_text else ()
        return ("vision_model", *text)

    @classmethod
    def from_clip(cls, name_or_path: str, **config_overrides: Any) -> FacetVLMPreTrainedModel:
        """Build a FACET-VLM model whose towers start from a pretrained CLIP.

        `name_or_path` is a transformers `CLIPModel` name or local folder (`"openai/clip-vit-base-patch16"`), or an
        open_clip model (needs `open_clip_torch`): `"hf-hub:org/repo"`, `"local-dir:FOLDER"` (open_clip's folder of
        `open_clip_config.json` and weights) or `"ARCH/PRETRAINED"` with an open_clip tag or a checkpoint file
        (`"ViT-B-16/openai"`, `"ViT-B-16//data/ckpt.safetensors"`). `config_overrides` go to `FacetVLMConfig`; the
        tower configs are CLIP's with the override's keys merged in, and keys that would change the shape of a CLIP
        weight (hidden sizes, depths, heads, vocabulary; `projection_dim`) are CLIP's: a differing override is
        replaced and named in a warning, so that any recipe config can start from CLIP.

        What loads: with `patch_stem="linear"` every CLIP weight (towers, projections, logit scale); with
        `patch_stem="conv"` all of them except CLIP's patch embedding (the conv stem starts new). The vision
        position embeddings are resized to the token grid of `image_size` / `patch_size`
        (`resize_position_embedding`). With `class_head="linear"` the text tower is not built. CVSA, MTGF, the
        temporal model, the context vectors and the linear head start new (context vectors from a template's CLIP
        word embeddings with `prompt_context_init`). The log lists what loaded and what did not
        (`FacetVLMModel.load_clip_weights` returns the same lists).
        """
        from .convert_open_clip_to_hf import is_open_clip_tag, load_open_clip_as_clip_model

        backend = "open_clip" if is_open_clip_tag(name_or_path) else "transformers"
        clip = load_open_clip_as_clip_model(name_or_path) if backend == "open_clip" else CLIPModel.from_pretrained(
            name_or_path
        )
        overrides = dict(config_overrides)
        settings: dict[str, Any] = {"logit_scale_init_value": float(clip.logit_scale.detach()),
                                    "text_backend": backend, "pretrained_clip_name": str(name_or_path)}
        replaced = []
        for key, keep in TOWER_SHAPE_KEYS.items():
            tower = getattr(clip.config, key).to_dict()
            given = overrides.pop(key, None) or {}
            given = given.to_dict() if hasattr(given, "to_dict") else dict(given)
            replaced += [f"{key}.{name}={given[name]} -> {tower[name]}" for name in keep
                         if name in given and given[name] != tower[name]]
            settings[key] = {**tower, **{name: value for name, value in given.items() if name not in keep}}
        if overrides.get("projection_dim", clip.config.projection_dim) != clip.config.projection_dim:
            replaced.append(f"projection_dim={overrides['projection_dim']} -> {clip.config.projection_dim}")
        overrides["projection_dim"] = clip.config.projection_dim
        if overrides.get("patch_stem", "linear") == "linear" and \
                settings["vision_config"]["patch_size"] != clip.config.vision_config.patch_size:
            replaced.append(f"vision_config.patch_size={settings['vision_config']['patch_size']} -> "
                            f"{clip.config.vision_config.patch_size} (the linear stem is CLIP's patch embedding)")
            settings["vision_config"]["patch_size"] = clip.config.vision_config.patch_size
        if replaced:
            logger.warning("from_clip %s: the towers are CLIP's, so these settings are CLIP's: %s", name_or_path,
                           "; ".join(replaced))
        settings.update(overrides)
        model = cls(cls.config_class(**settings))
        model.base_model.load_clip_weights(clip, source=str(name_or_path))
        return model


def _prompt_tensors(config: FacetVLMConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded prompt token ids (P, L), attention mask (P, L) and the class of every prompt (P,) from the config.

    Without tokenized prompts (a config built where no tokenizer was available) the tensors are empty."""
    prompts = [(k, ids) for k, class_ids in enumerate(config.prompt_input_ids or []) for ids in class_ids]
    length = max((len(ids) for _, ids in prompts), default=1)
    input_ids = torch.zeros(len(prompts), length, dtype=torch.long)
    mask = torch.zeros(len(prompts), length, dtype=torch.long)
    for row, (_, ids) in enumerate(prompts):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return input_ids, mask, torch.tensor([k for k, _ in prompts], dtype=torch.long)


class FacetVLMModel(FacetVLMPreTrainedModel):
    """FACET-VLM: CLIP towers + CVSA + MTGF (+ temporal transformer for 4D). Returns logits and embeddings, no loss.

    `pixel_values` are renderer outputs in their native ranges, (B, V, C, H, W) or (B, T, V, C, H, W), channel
    groups in `config.channels` order (texture RGB in [0, 1], depth in [0, 1], normals in [-1, 1]). The model maps
    every group to an RGB image in [0, 1] (depth replicated, normals as (n + 1) / 2) and applies CLIP's mean/std
    itself, so the processor does not normalise.
    """

    def __init__(self, config: FacetVLMConfig):
        super().__init__(config)
        dim = config.projection_dim
        self.vision_model = CLIPVisionModel._from_config(config.vision_config)
        if config.patch_stem == "conv":
            self.vision_model.embeddings.patch_embedding = FacetVLMConvStem(config)
        uses_text = config.uses_text
        self.text_model = CLIPTextModel._from_config(config.text_config) if uses_text else None
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, dim, bias=False) if uses_text else None
        self.prompt_context = FacetVLMPromptContext(config) if uses_text and config.prompt_context_length else None
        self.linear_head = None if uses_text else nn.Linear(dim, config.num_labels)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.cvsa = CrossViewSemanticAggregation(config) if config.use_cvsa else None
        self.mtgf = MultiviewTextGuidedFusion(config) if config.use_mtgf and uses_text else None
        self.temporal = FacetVLMTemporalTransformer(config)
        self.neutral_stem = None
        if config.neutral_reference == "difference":
            # the rendered difference from the neutral scan, embedded by a stem of its own and added to the patch
            # tokens (`neutral_reference` in the config)
            patch = config.vision_config.patch_size
            self.neutral_stem = (FacetVLMConvStem(config) if config.patch_stem == "conv" else
                                 nn.Conv2d(3, config.vision_config.hidden_size, patch, stride=patch, bias=False))
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        self._register_prompt_buffers()
        self.text_embeds_stale = True
        self.register_load_state_dict_post_hook(lambda module, incompatible_keys: module.mark_text_embeds_stale())
        if config.freeze_text_tower and uses_text:
            self.text_model.requires_grad_(False)
            self.text_projection.requires_grad_(False)
        self._zero_shot_text_embeds: torch.Tensor | None = None
        self.post_init()

    def _register_prompt_buffers(self) -> None:
        """(Re)build the prompt buffers from `config.prompt_input_ids` and an empty text-embedding cache."""
        input_ids, mask, class_index = _prompt_tensors(self.config)
        device = self.logit_scale.device
        self.register_buffer("prompt_input_ids", input_ids.to(device), persistent=False)
        self.register_buffer("prompt_attention_mask", mask.to(device), persistent=False)
        self.register_buffer("prompt_class_index", class_index.to(device), persistent=False)
        cache = torch.zeros(self.config.num_labels, self.config.projection_dim, device=device)
        self.register_buffer("class_text_embeds", cache, persistent=False)
        self.mark_text_embeds_stale()

    def mark_text_embeds_stale(self) -> None:
        """Forget the cached class text embeddings (weights or labels changed); they are recomputed when needed."""
        self.text_embeds_stale = True
        self._zero_shot_text_embeds = None

    @torch.no_grad()
    def init_prompt_context(self) -> None:
        """(Re)initialise the learned context vectors: the token embeddings of `config.prompt_context_init_ids` (the
        words of a template, in every class's row), or random normal with std `CONTEXT_INIT_STD` (CoOp's inits)."""
        context = self.prompt_context.context
        ids = self.config.prompt_context_init_ids
        if ids is None:
            init.normal_(context, std=CONTEXT_INIT_STD)
            return
        words = self.text_model.embeddings.token_embedding.weight[torch.tensor(ids, device=context.device)]
        init.copy_(context, words.to(context.dtype).unsqueeze(0).expand_as(context))

    def train(self, mode: bool = True) -> FacetVLMModel:
        self.mark_text_embeds_stale()
        return super().train(mode)

    def load_clip_weights(self, clip: CLIPModel, source: str = "CLIP") -> dict[str, list[str]]:
        """Copy a transformers `CLIPModel`'s towers, projections and logit scale into this model and log what loaded.

        The vision position embeddings are resized to this model's token grid (`resize_position_embedding`); with
        the conv stem CLIP's patch embedding is not used; with the linear head the text tower is not built, so
        CLIP's text weights are not used. Returns ``{"loaded", "new", "unused", "resized"}``: this model's tensors
        that now hold CLIP's, those that keep their fresh init (FACET-VLM's own modules, the conv stem), CLIP's
        tensors that have no place here, and the tensors that were resized (with their shapes). Raises
        `ValueError` if a tower tensor is left without CLIP weights or a shape differs.
        """
        state = clip.state_dict()
        own = self.state_dict()
        position_key = "vision_model.embeddings.position_embedding.weight"
        grid = self.config.image_size // self.config.vision_config.patch_size
        resized = []
        if position_key in state and state[position_key].shape != own[position_key].shape:
            before = tuple(state[position_key].shape)
            state[position_key] = resize_position_embedding(state[position_key], grid)
            resized.append(f"{position_key} {before} -> {tuple(state[position_key].shape)}")
        usable = {key: value for key, value in state.items() if key in own}
        mismatched = [f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}" for key, value in usable.items()
                      if value.shape != own[key].shape]
        if mismatched:
            raise ValueError(f"CLIP weights do not fit FACET-VLM: shapes differ for {mismatched}")
        self.load_state_dict(usable, strict=False)
        stem = "vision_model.embeddings.patch_embedding."
        new = sorted(key for key in own if key not in usable and not key.endswith("position_ids"))
        unexpected = [key for key in new if not key.startswith(OWN_MODULES)
                      and not (self.config.patch_stem == "conv" and key.startswith(stem))]
        if unexpected:
            raise ValueError(f"CLIP weights do not fit FACET-VLM: no CLIP weight for {unexpected}")
        report = {"loaded": sorted(usable), "new": new, "resized": resized,
                  "unused": sorted(key for key in state if key not in usable and not key.endswith("position_ids"))}
        logger.info("from_clip %s: %d tensors loaded from CLIP (%s); %d start new (%s); CLIP tensors not used: %s; "
                    "resized: %s", source, len(report["loaded"]), ", ".join(report["loaded"]), len(new),
                    ", ".join(new) or "none", ", ".join(report["unused"]) or "none", "; ".join(resized) or "none")
        if self.prompt_context is not None and self.config.prompt_context_init_ids is not None:
            self.init_prompt_context()
        stem_note = " (patch stem new: conv)" if self.config.patch_stem == "conv" else ""
        self.config.starting_weights = {
            "source": "clip",
            "vision_tower": f"{source}{stem_note}",
            "text_tower": source if self.text_model is not None else "none (linear head)",
            "text_tower_trained": self.text_model is not None and not self.config.freeze_text_tower,
        }
        self.mark_text_embeds_stale()
        return report

    # ----- text side -----
    def text_side_trainable(self) -> bool:
        """Whether anything that the class text embeddings depend on trains (text tower or projection weights, their
        LoRA adapters, the context vectors): then training recomputes them with gradients at every step."""
        modules = (self.text_model, self.text_projection, self.prompt_context)
        return any(p.requires_grad for module in modules if module is not None for p in module.parameters())

    def _require_text(self, what: str) -> None:
        if self.text_model is None:
            raise ValueError(f"{what} needs the text tower; this model has class_head='linear' (no text side)")

    def encode_prompt_features(self) -> torch.Tensor:
        """(P, D) projected text-tower features of every prompt, before normalisation.

        Without learned context this is CLIP's `get_text_features` for the prompts' tokens. With context the start
        token's embedding, the context vectors and the embeddings of the remaining tokens go through the tower's
        position embeddings, causal encoder and final layer norm (as `CLIPTextModel.forward` does with token ids),
        pooled at the end token."""
        self._require_text("encode_prompt_features")
        if self.prompt_input_ids.numel() == 0:
            raise ValueError(
                "the config has no tokenized prompts (prompt_input_ids); `import facet_vlm` before building the "
                "config, or call model.set_labels(labels, tokenizer=...) with a CLIP tokenizer"
            )
        input_ids, mask = self.prompt_input_ids, self.prompt_attention_mask
        if self.prompt_context is None:
            pooled = self.text_model(input_ids=input_ids, attention_mask=mask).pooler_output
            return self.text_projection(pooled)
        tower = self.text_model
        tokens = tower.embeddings.token_embedding(input_ids)
        context = self.prompt_context(self.prompt_class_index).to(tokens.dtype)
        embeds = torch.cat([tokens[:, :1], context, tokens[:, 1:]], dim=1)
        mask = torch.cat([mask[:, :1], mask.new_ones(len(mask), context.shape[1]), mask[:, 1:]], dim=1)
        hidden = tower.embeddings(inputs_embeds=embeds)
        causal = create_causal_mask(config=tower.config, inputs_embeds=hidden, attention_mask=mask, cache=None)
        hidden = tower.encoder(inputs_embeds=hidden, attention_mask=causal, is_causal=True).last_hidden_state
        hidden = tower.final_layer_norm(hidden)
        pooled = hidden[torch.arange(len(hidden), device=hidden.device), mask.sum(dim=1) - 1]
        return self.text_projection(pooled)

    def encode_prompts(self, center: bool | None = None) -> torch.Tensor:
        """(K, D) class text embeddings: every prompt through the text tower, L2-normalised, averaged per class,
        L2-normalised again (open_clip's zero-shot recipe), then centred over classes (`center`, default
        `config.center_text_embeds`)."""
        prompt_embeds = F.normalize(self.encode_prompt_features(), dim=-1)
        class_sums = prompt_embeds.new_zeros(self.config.num_labels, prompt_embeds.shape[-1])
        class_embeds = F.normalize(class_sums.index_add(0, self.prompt_class_index, prompt_embeds), dim=-1)
        center = self.config.center_text_embeds if center is None else center
        if center and len(class_embeds) > 1:
            class_embeds = F.normalize(class_embeds - class_embeds.mean(dim=0, keepdim=True), dim=-1)
        return class_embeds

    def get_text_embeds(self) -> torch.Tensor:
        """Class text embeddings: recomputed with gradients in training when the text side trains
        (`text_side_trainable`), otherwise from the cache (filled once after every weight or label change and
        every switch between training and evaluation)."""
        if self.training and torch.is_grad_enabled() and self.text_side_trainable():
            self.text_embeds_stale = True  # the weights change with every step: the cache is out of date
            return self.encode_prompts()
        if self.text_embeds_stale:
            with torch.no_grad():
                self.class_text_embeds = self.encode_prompts().to(self.class_text_embeds.dtype)
            self.text_embeds_stale = False
        return self.class_text_embeds

    def set_labels(
        self,
        labels: list[str] | tuple[str, ...],
        prompts: dict[str, list[str]] | list[list[str]] | None = None,
        tokenizer: Any = None,
        keep_known_classes: bool = True,
    ) -> None:
        """Switch to a new class set without retraining: the classes' prompts are tokenized and encoded by the text
        tower. `prompts` gives each class's prompt ensemble (a dict by name or a list aligned with `labels`); by
        default a class the model already has keeps its prompts (`keep_known_classes`), and the others get the
        config's templates x class descriptions (the bare descriptions with learned context; the class name when
        it has none). `tokenizer` maps a list of strings to CLIP token ids; defaults to the offline CLIP tokenizer
        (`configuration_facet_vlm.default_prompt_tokenizer`).

        The learned context is reused: a shared context as it is; a class-specific one keeps the rows of the
        classes the model knows (with `keep_known_classes`) and starts every new class from the mean of the old
        rows. The linear head keeps the rows of known classes and starts new ones afresh."""
        labels = list(labels)
        known = dict(self.config.label_prompts or {}) if keep_known_classes else {}
        if isinstance(prompts, (list, tuple)):
            if len(prompts) != len(labels):
                raise ValueError(f"got {len(prompts)} prompt lists for {len(labels)} labels")
            prompts = dict(zip(labels, prompts))
        tokenizer = tokenizer or default_prompt_tokenizer()
        if tokenizer is None:
            raise ValueError("set_labels needs a tokenizer: pass tokenizer=... (e.g. the processor's CLIP tokenizer)")
        config = self.config
        old_labels = config.labels
        keys = ("id2label", "label2id", "label_prompts", "prompt_input_ids")
        previous = {key: getattr(config, key) for key in keys}
        try:
            config.id2label = dict(enumerate(labels))
            config.label2id = {label: i for i, label in enumerate(labels)}
            config.label_prompts = {
                label: list((prompts or {}).get(label) or known.get(label) or ensemble_prompts(
                    label, config.class_prompt_templates, config.class_descriptions))
                for label in labels
            }
            config.prompt_input_ids = config.tokenize_prompts(tokenizer)
            config._check()
        except Exception:
            for key, value in previous.items():
                setattr(config, key, value)
            raise
        self._register_prompt_buffers()
        rows = [old_labels.index(label) if keep_known_classes and label in old_labels else None for label in labels]
        if self.prompt_context is not None and self.prompt_context.class_specific:
            old = self.prompt_context.context.detach()
            fresh = old.mean(dim=0, keepdim=True).expand(len(labels), -1, -1).clone()
            for row, source in enumerate(rows):
                if source is not None:
                    fresh[row] = old[source]
            self.prompt_context.context = nn.Parameter(fresh, requires_grad=self.prompt_context.context.requires_grad)
        if self.linear_head is not None:
            old_head = self.linear_head
            self.linear_head = nn.Linear(old_head.in_features, len(labels)).to(old_head.weight.device)
            init.normal_(self.linear_head.weight, std=self.config.initializer_range)
            init.zeros_(self.linear_head.bias)
            with torch.no_grad():
                for row, source in enumerate(rows):
                    if source is not None:
                        self.linear_head.weight[row] = old_head.weight[source]
                        self.linear_head.bias[row] = old_head.bias[source]

    # ----- vision side -----
    def _images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, V, C, H, W) renderer output -> (N * V * G, 3, H, W) CLIP-normalised images."""
        groups, start = [], 0
        for name in self.config.channels:
            width = CHANNEL_GROUP_WIDTHS[name]
            part = pixel_values[:, :, start : start + width]
            start += width
            if name == "normal":
                part = (part + 1.0) / 2.0
            if width == 1:
                part = part.expand(-1, -1, 3, -1, -1)
            groups.append(part)
        images = torch.stack(groups, dim=2).flatten(0, 2)
        return (images - self.image_mean) / self.image_std

    def _check_pixels(self, pixel_values: torch.Tensor) -> None:
        config = self.config
        shape = tuple(pixel_values.shape)
        if pixel_values.dim() not in (5, 6):
            raise ValueError(f"pixel_values must be (B, V, C, H, W) or (B, T, V, C, H, W), got {shape}")
        views, channels, height, width = shape[-4:]
        if channels != config.num_channels:
            raise ValueError(f"pixel_values has {channels} channels; {config.channels} need {config.num_channels}")
        if (height, width) != (config.image_size, config.image_size):
            size = config.image_size
            raise ValueError(f"pixel_values are {height}x{width}; the model expects {size}x{size} (the render size)")
        if config.use_cvsa and config.use_view_embeddings and views != config.num_views:
            raise ValueError(f"pixel_values has {views} views; the model has view embeddings for {config.num_views}")

    def _check_neutral(self, pixel_values: torch.Tensor, neutral_pixel_values: torch.Tensor | None) -> None:
        if self.neutral_stem is None:
            return
        if neutral_pixel_values is None:
            raise ValueError(f"this FACET-VLM has neutral_reference={self.config.neutral_reference!r}: pass "
                             "neutral_pixel_values, the same person's neutral scan rendered by the processor "
                             "(processor(faces, neutral_faces=...); the pipeline's neutral=... argument)")
        expected = tuple(pixel_values.shape[:1]) + tuple(pixel_values.shape[-4:])
        if tuple(neutral_pixel_values.shape) not in (expected, tuple(pixel_values.shape)):
            raise ValueError(f"neutral_pixel_values {tuple(neutral_pixel_values.shape)} must have the shape of one "
                             f"frame of pixel_values, {expected}")

    def _vision(self, images: torch.Tensor, reference: torch.Tensor | None) -> Any:
        """The vision tower on (N, 3, H, W) images; `reference` (N, 3, H, W), the same images of the neutral scan,
        adds the neutral stem's embedding of their difference to the patch tokens (CLIPVisionModel's forward with
        that one addition after the embeddings)."""
        tower = self.vision_model
        if reference is None:
            return tower(pixel_values=images)
        difference = self.config.neutral_difference_gain * (images - reference)
        tokens = self.neutral_stem(difference.to(self.neutral_stem.weight.dtype)).flatten(2).transpose(1, 2)
        hidden = tower.embeddings(images)
        hidden = hidden + torch.cat([torch.zeros_like(hidden[:, :1]), tokens.to(hidden.dtype)], dim=1)
        last = tower.encoder(inputs_embeds=tower.pre_layrnorm(hidden)).last_hidden_state
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=tower.post_layernorm(last[:, 0]))

    def encode_views(self, pixel_values: torch.Tensor, neutral_pixel_values: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, V, C, H, W) -> projected CLIP embeddings (N, V, G, D) and, when CVSA uses them, pooled patch tokens
        (N, V, G, grid^2, D). `neutral_pixel_values` (N, V, C, H, W): the neutral scan's renders (a model with
        `neutral_reference`)."""
        batch, views = pixel_values.shape[:2]
        groups = len(self.config.channels)
        reference = None
        if self.neutral_stem is not None and neutral_pixel_values is not None:
            reference = self._images(neutral_pixel_values.to(pixel_values))
        vision = self._vision(self._images(pixel_values), reference)
        tokens = self.visual_projection(vision.pooler_output).view(batch, views, groups, -1)
        if not (self.config.use_cvsa and self.config.cvsa_use_patch_tokens):
            return tokens, None
        patches = self.visual_projection(self.vision_model.post_layernorm(vision.last_hidden_state[:, 1:]))
        side = int(math.isqrt(patches.shape[1]))
        patches = patches.transpose(1, 2).reshape(patches.shape[0], -1, side, side)
        patches = F.adaptive_avg_pool2d(patches, self.config.cvsa_patch_grid).flatten(2).transpose(1, 2)
        return tokens, patches.reshape(batch, views, groups, patches.shape[1], -1)

    def _logit_scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)

    def _fuse_frames(self, pixel_values: torch.Tensor, text_embeds: torch.Tensor | None,
                     neutral_pixel_values: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-frame CVSA + MTGF on (N, V, C, H, W); "views" are each view's own embeddings, taken before CVSA."""
        tokens, patches = self.encode_views(pixel_values, neutral_pixel_values)
        batch, views, groups, dim = tokens.shape
        own_views = tokens.mean(dim=2)
        if self.cvsa is not None:
            tokens, face = self.cvsa(tokens, patches)
        else:
            face = tokens.mean(dim=(1, 2))
        if self.mtgf is not None:
            fused, weights = self.mtgf(text_embeds, tokens.reshape(batch, views * groups, dim), face)
            view_weights = weights.view(batch, -1, views, groups).sum(-1)
        else:
            fused = face.unsqueeze(1)
            view_weights = tokens.new_full((batch, self.config.num_labels, views), 1.0 / views)
        return {"face": face, "fused": fused, "views": own_views, "view_weights": view_weights}

    def forward(self, pixel_values: torch.Tensor, neutral_pixel_values: torch.Tensor | None = None,
                **kwargs: Any) -> FacetVLMOutput:
        """Logits and embeddings of 3D (B, V, C, H, W) or 4D (B, T, V, C, H, W) renderer output;
        `neutral_pixel_values` (B, V, C, H, W): the neutral scan's renders, needed with `neutral_reference` (ignored
        without), compared with every frame of a sequence."""
        self._check_pixels(pixel_values)
        self._check_neutral(pixel_values, neutral_pixel_values)
        text_embeds = self.get_text_embeds() if self.text_model is not None else None
        sequence = pixel_values.dim() == 6
        batch = pixel_values.shape[0]
        frames = pixel_values.shape[1] if sequence else 1
        neutral = neutral_pixel_values if self.neutral_stem is not None else None
        if neutral is not None and sequence:
            if neutral.dim() == 5:
                neutral = neutral.unsqueeze(1).expand(-1, frames, -1, -1, -1, -1)
            neutral = neutral.flatten(0, 1)
        fused = self._fuse_frames(pixel_values.flatten(0, 1) if sequence else pixel_values, text_embeds, neutral)
        face, class_embeds = fused["face"], fused["fused"]
        views, view_weights = fused["views"], fused["view_weights"]
        if sequence:
            streams = torch.cat([face.unsqueeze(1), class_embeds], dim=1) if self.mtgf is not None else face[:, None]
            streams = streams.view(batch, frames, streams.shape[1], -1).transpose(1, 2)
            pooled = self.temporal(streams.flatten(0, 1)).view(batch, streams.shape[1], -1)
            face = pooled[:, 0]
            class_embeds = pooled[:, 1:] if self.mtgf is not None else pooled
            views = views.view(batch, frames, *views.shape[1:]).mean(dim=1)
            view_weights = view_weights.view(batch, frames, *view_weights.shape[1:]).mean(dim=1)
        if self.linear_head is not None:
            logits, view_logits = self.linear_head(face), self.linear_head(views)
        else:
            scale = self._logit_scale()
            logits = scale * (F.normalize(class_embeds, dim=-1) * text_embeds).sum(-1)
            view_logits = scale * F.normalize(views, dim=-1) @ text_embeds.t()
        return FacetVLMOutput(
            logits=logits,
            face_embeds=face,
            view_embeds=views,
            view_weights=view_weights,
            text_embeds=text_embeds,
            view_logits=view_logits,
        )

    @torch.no_grad()
    def zero_shot(self, pixel_values: torch.Tensor) -> FacetVLMOutput:
        """CLIP zero-shot classification with the pretrained towers alone (no CVSA, MTGF or temporal weights, which
        are untrained right after `from_clip`): the normalised CLIP embeddings of all views, channel groups (and
        frames) are averaged and compared by cosine with the prompt-ensemble text embeddings, times the logit scale.
        The text embeddings follow CLIP's zero-shot recipe (open_clip's `build_zero_shot_classifier`: normalised
        prompt features averaged per class and normalised again, not centred over classes, with the learned context
        where the model has one); they are cached until the weights or labels change. For a single view and channel
        group the logits are CLIP's image-text logits.
        """
        self._check_pixels(pixel_values)
        self._require_text("zero_shot")
        if self._zero_shot_text_embeds is None:
            self._zero_shot_text_embeds = self.encode_prompts(center=False)
        text_embeds = self._zero_shot_text_embeds
        flat = pixel_values.flatten(0, 1) if pixel_values.dim() == 6 else pixel_values
        views = F.normalize(self.encode_views(flat)[0], dim=-1).mean(dim=2)
        views = views.view(pixel_values.shape[0], -1, *views.shape[1:]).mean(dim=1)
        face = F.normalize(views.mean(dim=1), dim=-1)
        scale = self._logit_scale()
        return FacetVLMOutput(
            logits=scale * face @ text_embeds.t(),
            face_embeds=face,
            view_embeds=views,
            text_embeds=text_embeds,
            view_logits=scale * F.normalize(views, dim=-1) @ text_embeds.t(),
        )


class FacetVLMForExpressionRecognition(FacetVLMPreTrainedModel):
    """FACET-VLM with its training loss: cross-entropy on the fused logits + the multiview consistency loss.

    Example:

    ```python
    >>> import torch
    >>> from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition
    >>> tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    >>> config = FacetVLMConfig(vision_config={**tiny, "image_size": 32, "patch_size": 8}, text_config=tiny,
    ...                         projection_dim=32, cvsa_heads=2, mtgf_heads=2)
    >>> model = FacetVLMForExpressionRecognition(config)
    >>> pixel_values = torch.rand(2, 5, 7, 32, 32)  # texture, depth, normal renders of 5 views
    >>> out = model(pixel_values, labels=torch.tensor([0, 3]))
    >>> out.logits.shape, out.view_weights.shape
    (torch.Size([2, 6]), torch.Size([2, 6, 5]))
    ```
    """

    def __init__(self, config: FacetVLMConfig):
        super().__init__(config)
        self.facet_vlm = FacetVLMModel(config)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                neutral_pixel_values: torch.Tensor | None = None, **kwargs: Any) -> FacetVLMOutput:
        """Logits for 3D (B, V, C, H, W) or 4D (B, T, V, C, H, W) input; with `labels` (B,) also the loss;
        `neutral_pixel_values`: the neutral scan's renders (a model with `neutral_reference`)."""
        output = self.facet_vlm(pixel_values, neutral_pixel_values=neutral_pixel_values)
        if labels is not None:
            output.loss, output.ce_loss, output.consistency_loss = facet_vlm_loss(output, labels, self.config)
        return output

    def set_labels(
        self,
        labels: list[str] | tuple[str, ...],
        prompts: dict[str, list[str]] | list[list[str]] | None = None,
        tokenizer: Any = None,
        keep_known_classes: bool = True,
    ) -> None:
        """See `FacetVLMModel.set_labels`."""
        self.facet_vlm.set_labels(labels, prompts=prompts, tokenizer=tokenizer, keep_known_classes=keep_known_classes)

    def zero_shot(self, pixel_values: torch.Tensor) -> FacetVLMOutput:
        """See `FacetVLMModel.zero_shot`."""
        return self.facet_vlm.zero_shot(pixel_values)


__all__ = [
    "CrossViewSemanticAggregation",
    "FacetVLMConvStem",
    "FacetVLMForExpressionRecognition",
    "FacetVLMModel",
    "FacetVLMOutput",
    "FacetVLMPreTrainedModel",
    "MultiviewTextGuidedFusion",
    "class_margin_loss",
    "facet_vlm_loss",
    "multiview_consistency_loss",
    "sample_sequence_frames",
    "view_agreement_loss",
]
