"""Subject-invariant physio-facial prompt tuning for video emotion recognition (face video + rPPG pulse).

A frozen CLIP ViT reads ``T`` face frames of a clip (as ``B*T`` images), layer by layer. Before every layer ``l``
the pulse's time-frequency map (TFR) contributes ``P`` prompt tokens (deep prompt tuning: inserted after the CLS
token at layer ``l`` and dropped after it, replaced by layer ``l+1``'s own prompts). After every layer a decoupled
shared-specific adapter edits the residual stream: ``h <- h + shared(h) [+ specific_s(h)]``, where the
subject-specific bottleneck adapter of training subject ``s`` is added only in training when ``subject_ids`` are
given. With ``shared_adapter_input="temporal_deviation"`` the shared adapter reads each token's deviation from its
mean over the clip's frames, ``shared(h_t - mean_t h)``, so the test-time path adds only what changes within the
clip, while the specific adapters read ``h`` (what the person looks like). Two losses keep the shared path
subject-invariant:

* orthogonality — the mean squared cosine between the shared and the specific adapter outputs of every token and
  layer (activations, not weights: what matters is that they write different directions into the stream);
* subject adversary — a classifier predicts the training subject, and the test-time path is trained against it
  to hide identity: through a gradient-reversal layer (``adversary_objective="reversal"``) or towards a uniform
  prediction of the adversary (``"confusion"``). By default (``adversary_input="video_embeds"``) it reads the
  time-pooled features of the training samples that went through the shared adapters only (their specific
  adapters dropped): the features an identity probe reads at test time. ``"shared_code"`` reads the shared
  adapters' contribution (token-, frame- and layer-averaged) of every sample instead.

Optionally (``invariance_weight`` > 0) subject-mean matching, an invariance term without an adversary: within each
valence/arousal label group, every training subject's mean feature (kept in a memory of running means) is pulled to
the mean over subjects, relative to the features' spread (:class:`SubjectMeanMatching`).

Per-sample dropout of the specific adapters (``specific_adapter_dropout``) makes the heads also learn from the
test-time path. The CLS outputs of the last layer are pooled over time (attention or mean) and, with the pulse
embedding, feed the heads: valence high/low, arousal high/low and optionally a discrete emotion.

Logits convention: ``logits`` is the concatenation ``[valence (2), arousal (2), emotion (num_emotions)]`` along the
last axis; each head's logits are also returned on their own. ``labels`` is ``(B, 2)`` = (valence_high,
arousal_high) or ``(B, 3)`` with the emotion index last (-100 = unknown); use :func:`ratings_to_labels` to turn 1..9
ratings into those classes.

PEFT: the trainable parts are custom modules, which are not PEFT tuner layers, so they are saved with LoRA's
``modules_to_save`` (full copies of the prompt generator, the adapters, the pooling and the heads, trained and
saved while everything else stays frozen and unsaved). The ViT gets no LoRA by default (``vit_lora_rank=0``, done
with PEFT's dummy target list so that no layer is wrapped) — it stays exactly the loaded CLIP; a positive rank adds
LoRA to its q/v projections. Named per-subject PEFT adapters were rejected: they would need one PEFT adapter per
training subject switched per sample, and the subject adapters are dropped at test time anyway.
See :meth:`PhysioPromptForEmotionRecognition.peft_config_kwargs`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModel, PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import ModelOutput

from .configuration_physio_prompt import PhysioPromptConfig

#: PEFT's sentinel target list meaning "wrap no layer" (``peft.utils.constants.DUMMY_TARGET_MODULES``).
PEFT_NO_TARGET_MODULES = "dummy-target-modules"


def ratings_to_labels(valence: torch.Tensor, arousal: torch.Tensor, threshold: float = 5.0) -> torch.Tensor:
    """``(B, 2)`` long labels (valence_high, arousal_high) from 1..9 ratings: high = strictly above ``threshold``."""
    valence, arousal = torch.as_tensor(valence), torch.as_tensor(arousal)
    return torch.stack([(valence > threshold).long(), (arousal > threshold).long()], dim=-1)


@dataclass
class PhysioPromptOutput(ModelOutput):
    """Output of [`PhysioPromptForEmotionRecognition`].

    Args:
        loss: total loss (when labels are given): task losses + weighted orthogonality and adversarial terms.
        logits: ``(B, 4 + num_emotions)`` = [valence (2), arousal (2), emotion (num_emotions)].
        valence_logits, arousal_logits: ``(B, 2)`` low/high.
        emotion_logits: ``(B, num_emotions)`` or None.
        loss_valence, loss_arousal, loss_emotion: cross-entropies of the heads (None without their labels).
        loss_orthogonality: shared/specific orthogonality (None unless the specific adapters ran).
        loss_adversarial: subject cross-entropy of the adversary (None unless training with subject_ids).
        loss_invariance: subject-mean matching ratio (None unless `invariance_weight` > 0 in training).
        subject_logits: ``(N, num_train_subjects)`` of the adversary for the N samples it read (all of them with
            ``adversary_input="shared_code"``, the shared-only ones with ``"video_embeds"``), when it ran.
        video_embeds: ``(B, hidden)`` time-pooled CLS embedding.
        pulse_embeds: ``(B, pulse_hidden_size)`` embedding of the TFR (None without pulse prompts).
        shared_code: ``(B, hidden)`` the shared adapters' contribution averaged over tokens, layers and frames: what
            the trainable test-time path adds to the frozen tower (the subject-identity probe reads it).
        features: ``(B, D)`` what the heads read: ``video_embeds``, with ``pulse_embeds`` appended when
            `use_pulse_embedding` is on.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    valence_logits: torch.Tensor | None = None
    arousal_logits: torch.Tensor | None = None
    emotion_logits: torch.Tensor | None = None
    loss_valence: torch.Tensor | None = None
    loss_arousal: torch.Tensor | None = None
    loss_emotion: torch.Tensor | None = None
    loss_orthogonality: torch.Tensor | None = None
    loss_adversarial: torch.Tensor | None = None
    loss_invariance: torch.Tensor | None = None
    subject_logits: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    pulse_embeds: torch.Tensor | None = None
    shared_code: torch.Tensor | None = None
    features: torch.Tensor | None = None


@dataclass
class PhysioPromptModelOutput(ModelOutput):
    """Output of [`PhysioPromptModel`]: the clip's features without emotion heads.

    Args:
        features: ``(B, hidden [+ pulse_hidden_size])`` what the heads read: the time-pooled CLS embedding, with the
            pulse embedding appended when ``use_pulse_embedding``.
        video_embeds: ``(B, hidden)`` time-pooled CLS embedding.
        pulse_embeds: ``(B, pulse_hidden_size)`` embedding of the TFR (None without pulse prompts).
        shared_code: ``(B, hidden)`` the shared adapters' contribution averaged over tokens, layers and frames (what
            the subject adversary reads with ``adversary_input="shared_code"``).
        shared_only: ``(B,)`` bool, True for the samples that went through the shared adapters only (always True
            outside training or without ``subject_ids``).
        loss_orthogonality: shared/specific orthogonality (None unless the specific adapters ran).
    """

    features: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    pulse_embeds: torch.Tensor | None = None
    shared_code: torch.Tensor | None = None
    shared_only: torch.Tensor | None = None
    loss_orthogonality: torch.Tensor | None = None


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``-scale`` backward (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


class PulsePromptGenerator(nn.Module):
    """TFR ``(B, C, F, T')`` -> pulse embedding ``(B, E)`` and prompts ``(B, layers, P, hidden)``.

    Two conv blocks and adaptive pooling to 4x4 make it independent of the TFR size; the prompts of each layer are
    a learned base (as in VPT-deep) plus a TFR-conditioned offset whose projection starts at zero.
    """

    def __init__(self, config: PhysioPromptConfig):
        super().__init__()
        channels = config.pulse_conv_channels
        vision = config.vision_config
        self.num_layers, self.num_prompts, self.hidden_size = (vision.num_hidden_layers, config.num_prompts,
                                                               vision.hidden_size)
        self.encoder = nn.Sequential(
            nn.Conv2d(config.tfr_channels, channels, 3, padding=1), nn.GELU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * channels * 16, config.pulse_hidden_size), nn.GELU(),
            nn.Linear(config.pulse_hidden_size, config.pulse_hidden_size),
        )
        self.prompt_base = nn.Parameter(torch.zeros(self.num_layers, self.num_prompts, self.hidden_size))
        self.prompt_proj = nn.Linear(config.pulse_hidden_size, self.num_layers * self.num_prompts * self.hidden_size)
        self.prompt_proj.zero_init = True

    def forward(self, tfr_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pulse = self.encoder(tfr_values)
        offsets = self.prompt_proj(pulse).view(-1, self.num_layers, self.num_prompts, self.hidden_size)
        return self.prompt_base + offsets, pulse


class BottleneckAdapter(nn.Module):
    """``x -> up(GELU(down(x)))``; ``up`` starts at zero (``zero_init``) so an untrained adapter changes nothing."""

    def __init__(self, hidden_size: int, bottleneck: int):
        super().__init__()
        self.down_proj = nn.Linear(hidden_size, bottleneck)
        self.up_proj = nn.Linear(bottleneck, hidden_size)
        self.up_proj.zero_init = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.up_proj(F.gelu(self.down_proj(hidden_states)))


#: Label groups of the per-subject memories: valence and arousal each low, high or unknown.
LABEL_GROUPS = 9


def label_groups(valence: torch.Tensor | None, arousal: torch.Tensor | None, size: int,
                 device: torch.device) -> torch.Tensor:
    """Group index 0..8 of each sample from its valence and arousal labels (-100 or None = unknown)."""
    codes = []
    for labels in (valence, arousal):
        labels = torch.full((size,), -100, device=device) if labels is None else \
            torch.as_tensor(labels, device=device).long()
        codes.append(torch.where(labels >= 0, labels.clamp(0, 1) + 1, torch.zeros_like(labels)))
    return codes[0] * 3 + codes[1]


def _running_cell_means(means: torch.Tensor, counts: torch.Tensor, features: torch.Tensor, cells: torch.Tensor,
                        momentum: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(touched cells, their clip counts in the batch, their updated running means) of a (subject, group) memory:
    ``m + r (batch mean - m)`` with ``r`` the running-average rate, at least ``momentum`` (with the batch's
    gradient; the caller writes them back)."""
    touched, inverse = cells.unique(return_inverse=True)
    sizes = torch.bincount(inverse, minlength=len(touched)).to(features.dtype)
    batch_means = torch.zeros(len(touched), features.shape[1], device=features.device,
                              dtype=features.dtype).index_add(0, inverse, features) / sizes[:, None]
    rate = torch.maximum(sizes / (counts[touched] + sizes), torch.full_like(sizes, momentum))
    old = means[touched]
    return touched, sizes, old + rate[:, None] * (batch_means - old)


def _group_centres(table: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Each label group's mean over the subjects present in it: table (S, G, D), present (S, G) -> (G, D)."""
    present = present.to(table.dtype)
    return (table * present[..., None]).sum(0) / present.sum(0).clamp(min=1)[:, None]


class SharedAdapter(BottleneckAdapter):
    """The shared bottleneck adapter of one layer; with `PhysioPromptConfig.identity_nullspace_rank` ``k`` > 0 its
    output is projected off ``k`` identity directions (``identity_basis`` (D, k), a saved buffer).

    In training, with subject ids and label groups, the adapter's raw output averaged over tokens and frames enters
    a memory of per-(subject, label group) running means (not saved); the directions are then the top-``k`` right
    singular vectors of the cells' deviations from their group's mean over subjects (directions with a singular
    value below 1e-6 of the largest are left out), and that projection applies at once. Outside training the
    stored directions apply unchanged. The projection is linear, so the shared code (the outputs' average) has no
    component along those directions either."""

    def __init__(self, config: PhysioPromptConfig):
        hidden = config.vision_config.hidden_size
        super().__init__(hidden, config.adapter_bottleneck)
        self.rank = config.identity_nullspace_rank if config.num_train_subjects > 0 else 0
        self.momentum = config.invariance_momentum
        if self.rank:
            self.register_buffer("identity_basis", torch.zeros(hidden, self.rank))
            self.register_buffer("means", torch.zeros(config.num_train_subjects * LABEL_GROUPS, hidden),
                                 persistent=False)
            self.register_buffer("counts", torch.zeros(config.num_train_subjects * LABEL_GROUPS), persistent=False)

    @torch.no_grad()
    def _refit(self, output: torch.Tensor, frames_per_clip: int, subjects: torch.Tensor,
               groups: torch.Tensor) -> None:
        clips = output.float().mean(dim=1).view(len(subjects), frames_per_clip, -1).mean(dim=1)
        touched, sizes, updated = _running_cell_means(self.means, self.counts, clips,
                                                      subjects * LABEL_GROUPS + groups, self.momentum)
        self.means[touched] = updated
        self.counts[touched] += sizes
        present = (self.counts > 0).view(-1, LABEL_GROUPS)
        table = self.means.view(-1, LABEL_GROUPS, self.means.shape[1])
        deviations = (table - _group_centres(table, present))[present]
        _, values, directions = torch.linalg.svd(deviations, full_matrices=False)
        keep = min(self.rank, len(values))
        kept = (values[:keep] > 1e-6 * values[:1].clamp(min=1e-12)).to(directions.dtype)
        basis = torch.zeros_like(self.identity_basis)
        basis[:, :keep] = directions[:keep].T * kept
        self.identity_basis.copy_(basis)

    def forward(self, hidden_states: torch.Tensor, frames_per_clip: int = 1, subjects: torch.Tensor | None = None,
                groups: torch.Tensor | None = None) -> torch.Tensor:
        """hidden_states (B*T, N, D) -> the adapter's output; ``subjects``/``groups`` (B,) refit the identity
        directions in training (T = ``frames_per_clip``)."""
        output = super().forward(hidden_states)
        if not self.rank:
            return output
        if self.training and subjects is not None and groups is not None:
            self._refit(output, frames_per_clip, subjects, groups)
        basis = self.identity_basis.to(output.dtype)
        return output - (output @ basis) @ basis.T


class SubjectSpecificAdapters(nn.Module):
    """One bottleneck adapter per training subject, applied per sample by subject id (batched gather)."""

    def __init__(self, num_subjects: int, hidden_size: int, bottleneck: int):
        super().__init__()
        self.down_weight = nn.Parameter(torch.empty(num_subjects, hidden_size, bottleneck))
        self.down_bias = nn.Parameter(torch.zeros(num_subjects, bottleneck))
        self.up_weight = nn.Parameter(torch.zeros(num_subjects, bottleneck, hidden_size))
        self.up_bias = nn.Parameter(torch.zeros(num_subjects, hidden_size))

    def forward(self, hidden_states: torch.Tensor, subject_ids: torch.Tensor) -> torch.Tensor:
        down = torch.einsum("nld,ndr->nlr", hidden_states, self.down_weight[subject_ids])
        down = F.gelu(down + self.down_bias[subject_ids][:, None])
        return torch.einsum("nlr,nrd->nld", down, self.up_weight[subject_ids]) + self.up_bias[subject_ids][:, None]


class PhysioAdapterLayer(nn.Module):
    """The decoupled adapters after one ViT layer: ``shared_adapter`` and (if any) ``specific_adapter``."""

    def __init__(self, config: PhysioPromptConfig):
        super().__init__()
        hidden = config.vision_config.hidden_size
        self.shared_adapter = SharedAdapter(config)
        self.specific_adapter = (SubjectSpecificAdapters(config.num_train_subjects, hidden, config.adapter_bottleneck)
                                 if config.num_train_subjects > 0 else None)


class TemporalPooling(nn.Module):
    """``(B, T, D) -> (B, D)``: softmax attention over frames with a learned scorer, or the mean."""

    def __init__(self, config: PhysioPromptConfig):
        super().__init__()
        self.mode = config.temporal_pooling
        hidden = config.vision_config.hidden_size
        self.score = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, frame_embeds: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return frame_embeds.mean(dim=1)
        weights = torch.softmax(self.score(frame_embeds), dim=1)
        return (weights * frame_embeds).sum(dim=1)


class EmotionHeads(nn.Module):
    """Valence and arousal (2 classes each) and an optional discrete-emotion head."""

    def __init__(self, config: PhysioPromptConfig):
        super().__init__()
        features = config.vision_config.hidden_size + (config.pulse_hidden_size if config.use_pulse_embedding else 0)
        self.norm = nn.LayerNorm(features)
        self.dropout = nn.Dropout(config.head_dropout)
        self.valence = nn.Linear(features, 2)
        self.arousal = nn.Linear(features, 2)
        self.emotion = nn.Linear(features, config.num_emotions) if config.num_emotions > 0 else None

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        features = self.dropout(self.norm(features))
        emotion = self.emotion(features) if self.emotion is not None else None
        return self.valence(features), self.arousal(features), emotion


class SubjectClassifier(nn.Module):
    """Subject adversary: a 2-layer MLP over the features it reads (`PhysioPromptConfig.adversary_input`).

    ``forward`` puts gradient reversal in front of it (``adversary_objective="reversal"``); `confusion_terms` gives
    the two terms of ``"confusion"``: the adversary's cross-entropy on detached features (trains the adversary
    only) and the cross-entropy of its prediction, with its weights held fixed, against the uniform distribution
    (trains the features only)."""

    def __init__(self, config: PhysioPromptConfig):
        super().__init__()
        hidden = config.vision_config.hidden_size
        self.scale = config.gradient_reversal_scale
        self.mlp = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, config.num_train_subjects))

    def forward(self, shared_code: torch.Tensor) -> torch.Tensor:
        return self.mlp(GradientReversal.apply(shared_code, self.scale))

    def confusion_terms(self, features: torch.Tensor, subjects: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, adversary cross-entropy on detached features, confusion loss of the features)."""
        logits = self.mlp(features.detach())
        fixed = {name: value.detach() for name, value in self.mlp.named_parameters()}
        through = torch.func.functional_call(self.mlp, fixed, (features,))
        confusion = -F.log_softmax(through, dim=-1).mean(dim=-1).mean()
        return logits, F.cross_entropy(logits, subjects), confusion


class SubjectMeanMatching(nn.Module):
    """Subject-mean matching (`PhysioPromptConfig.invariance_weight`): within each label group, the training
    subjects' mean features should coincide.

    Groups are the 9 combinations of the valence and arousal labels (low, high or unknown each), so that a subject
    whose clips are mostly high-arousal is not asked to look like the others' low-arousal clips. A memory holds each
    (subject, group) cell's running mean (``means``, ``counts``; non-persistent buffers, rebuilt by training). For a
    batch, each cell it touches gets the updated mean ``m + r (batch mean - m)`` with gradient through the batch
    (``r`` = the cell's running-average rate, at least `invariance_momentum`), every group's centre is the mean of
    its cells over subjects, and the loss is the mean squared distance of the touched cells from their group centre
    over the running mean (without gradient) of the features' squared distance from theirs: the share of the
    features' spread that subject identity explains (0 when every subject's mean is its group's centre; at most 1
    on the first batch). The gradient moves each subject's mean towards its group's centre (not the features as a
    whole: scaling them changes the loss only until the running spread follows). The memory is updated after the
    loss, without gradient. Under DDP the memory is a buffer like any other: every process starts each step from
    rank 0's (DDP broadcasts buffers), so it holds the running means of rank 0's batches."""

    GROUPS = LABEL_GROUPS

    def __init__(self, config: PhysioPromptConfig):
        super().__init__()
        subjects, hidden = config.num_train_subjects, config.vision_config.hidden_size
        self.momentum = config.invariance_momentum
        self.register_buffer("means", torch.zeros(subjects * self.GROUPS, hidden), persistent=False)
        self.register_buffer("counts", torch.zeros(subjects * self.GROUPS), persistent=False)
        self.register_buffer("spread", torch.zeros(2), persistent=False)  # (running spread, batches seen)

    def forward(self, features: torch.Tensor, subjects: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        features = features.float()
        touched, sizes, updated = _running_cell_means(self.means, self.counts, features,
                                                      subjects * self.GROUPS + groups, self.momentum)
        table = self.means.detach().index_put((touched,), updated)
        present = (self.counts > 0).index_put((touched,), torch.ones_like(touched, dtype=torch.bool))
        centres = _group_centres(table.view(-1, self.GROUPS, features.shape[1]), present.view(-1, self.GROUPS))
        between = (updated - centres[touched % self.GROUPS]).pow(2).sum(-1).mean()
        with torch.no_grad():
            batch_spread = (features - centres[groups]).pow(2).sum(-1).mean()
            running, seen_batches = self.spread
            spread = running + (1.0 / (seen_batches + 1)).clamp(min=self.momentum) * (batch_spread - running)
            self.spread.copy_(torch.stack([spread, seen_batches + 1]))
            self.means[touched] = updated.detach()
            self.counts[touched] += sizes
        return between / (spread + 1e-8)


class PhysioPromptPreTrainedModel(PreTrainedModel):
    config: PhysioPromptConfig
    config_class = PhysioPromptConfig
    base_model_prefix = "physio_prompt"
    #: config.json's ``auto_map`` (Hub remote code): each Auto class and the class of this file it loads.
    auto_classes = {"AutoModel": "PhysioPromptModel",
                    "AutoModelForVideoClassification": "PhysioPromptForEmotionRecognition"}
    main_input_name = "pixel_values"
    input_modalities = ("video",)
    _no_split_modules = ["CLIPEncoderLayer"]
    # The prompts join the tokens of the CLIP layers, whose attention follows `attn_implementation` (vision_config).
    _supports_sdpa = True
    supports_gradient_checkpointing = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config.vision_config, "initializer_range", 0.02)
        if isinstance(module, PhysioPromptPreTrainedModel) and hasattr(module, "image_mean"):
            # Non-persistent buffers are not in checkpoints: set them here, where loading expects them set.
            module.image_mean.copy_(torch.tensor(self.config.image_mean).view(1, 3, 1, 1))
            module.image_std.copy_(torch.tensor(self.config.image_std).view(1, 3, 1, 1))
        elif isinstance(module, SubjectMeanMatching):  # an empty memory (non-persistent, like image_mean)
            module.means.zero_()
            module.counts.zero_()
            module.spread.zero_()
        elif isinstance(module, SharedAdapter) and module.rank:  # no identity direction until training finds one
            nn.init.zeros_(module.identity_basis)  # saved: through nn.init, which loading skips for loaded tensors
            module.means.zero_()
            module.counts.zero_()
        elif isinstance(module, PulsePromptGenerator):
            nn.init.normal_(module.prompt_base, std=self.config.prompt_init_std)
        elif isinstance(module, nn.Linear) and getattr(module, "zero_init", False):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, SubjectSpecificAdapters):
            nn.init.normal_(module.down_weight, std=std)
            for parameter in (module.down_bias, module.up_weight, module.up_bias):
                nn.init.zeros_(parameter)
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

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


class PhysioPromptModel(PhysioPromptPreTrainedModel):
    """The physio-facial backbone without emotion heads: frozen CLIP ViT over the frames, pulse prompts at every layer,
    shared (and, in training, subject-specific) adapters, temporal pooling; returns the clip's features (what
    `AutoModel` loads).

    `PhysioPromptForEmotionRecognition` subclasses it and adds the heads and the subject adversary, so the weight
    names of both are the same (a recognition model's folder loads into `PhysioPromptModel`, the heads left out).
    Inputs as in `PhysioPromptForEmotionRecognition` (without the labels).
    """

    def __init__(self, config: PhysioPromptConfig):
        super().__init__(config)
        self.vision_model = CLIPVisionModel(config.vision_config)
        self.prompt_generator = PulsePromptGenerator(config)
        self.adapter_layers = nn.ModuleList([PhysioAdapterLayer(config)
                                             for _ in range(config.vision_config.num_hidden_layers)])
        self.temporal_pooling = TemporalPooling(config)
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        if type(self) is PhysioPromptModel:
            self.post_init()
        if config.freeze_vision:
            self.vision_model.requires_grad_(False)

    @classmethod
    def from_clip(cls, name_or_path: str, **config_kwargs) -> PhysioPromptModel:
        """A new model whose ViT is the pretrained CLIP vision tower at ``name_or_path`` (Hub id or local folder)."""
        vision = CLIPVisionModel.from_pretrained(name_or_path)
        model = cls(PhysioPromptConfig(vision_config=vision.config, **config_kwargs))
        model.vision_model.load_state_dict(vision.state_dict())
        return model

    def forward(self, pixel_values: torch.Tensor, tfr_values: torch.Tensor, subject_ids: torch.Tensor | None = None,
                label_groups: torch.Tensor | None = None, **kwargs) -> PhysioPromptModelOutput:
        """``label_groups`` (B,): each clip's valence/arousal group (`label_groups`), read in training by the shared
        adapters' identity projection (`identity_nullspace_rank`); unknown (group 0) when not given."""
        if pixel_values.ndim != 5:
            raise ValueError(f"pixel_values must be (B, T, 3, H, W), got {tuple(pixel_values.shape)}")
        batch, frames_per_clip = pixel_values.shape[:2]
        deviations = self.config.shared_adapter_input == "temporal_deviation"
        if deviations and frames_per_clip < 2:
            raise ValueError(f"shared_adapter_input='temporal_deviation' reads change within a clip and needs at "
                             f"least 2 frames per clip, got pixel_values of shape {tuple(pixel_values.shape)}")
        vision = self.vision_model
        size = self.config.vision_config.image_size
        images = pixel_values.flatten(0, 1).to(self.image_mean.dtype)
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        images = (images - self.image_mean) / self.image_std

        prompts = pulse_embeds = None
        if self.config.use_pulse_prompts:
            prompts, pulse_embeds = self.prompt_generator(tfr_values.to(images.dtype))
            prompts = prompts.repeat_interleave(frames_per_clip, dim=0)
        use_specific = self.training and subject_ids is not None and self.config.num_train_subjects > 0
        frame_subjects = keep = groups = None
        shared_only = torch.ones(batch, dtype=torch.bool, device=images.device)
        if use_specific:
            subject_ids = torch.as_tensor(subject_ids, device=images.device).long()
            if subject_ids.min() < 0 or subject_ids.max() >= self.config.num_train_subjects:
                raise ValueError(f"subject_ids must be in [0, {self.config.num_train_subjects}), got "
                                 f"{subject_ids.tolist()}")
            frame_subjects = subject_ids.repeat_interleave(frames_per_clip)
            groups = (torch.zeros_like(subject_ids) if label_groups is None else
                      torch.as_tensor(label_groups, device=images.device).long())
            kept = torch.rand(batch, device=images.device) >= self.config.specific_adapter_dropout
            shared_only = ~kept
            keep = kept.to(images.dtype).repeat_interleave(frames_per_clip)[:, None, None]

        hidden = vision.pre_layrnorm(vision.embeddings(images))
        num_prompts = self.config.num_prompts
        shared_codes, cosines = [], []
        for index, layer in enumerate(vision.encoder.layers):
            if self.config.use_pulse_prompts:
                tokens = torch.cat([hidden[:, :1], prompts[:, index], hidden[:, 1:]], dim=1)
                tokens = layer(tokens, attention_mask=None)
                hidden = torch.cat([tokens[:, :1], tokens[:, 1 + num_prompts:]], dim=1)
            else:  # the "without pulse prompts" ablation: the ViT sees the frame tokens only, the pulse is unread
                hidden = layer(hidden, attention_mask=None)
            adapters = self.adapter_layers[index]
            shared_input = hidden
            if deviations:
                clip_tokens = hidden.view(batch, frames_per_clip, *hidden.shape[1:])
                shared_input = (clip_tokens - clip_tokens.mean(dim=1, keepdim=True)).flatten(0, 1)
            shared = adapters.shared_adapter(shared_input, frames_per_clip, subject_ids if use_specific else None,
                                             groups)
            shared_codes.append(shared.mean(dim=1))
            update = shared
            if use_specific:
                specific = adapters.specific_adapter(hidden, frame_subjects) * keep
                cosine = F.cosine_similarity(shared, specific, dim=-1, eps=1e-8)
                cosines.append((cosine.pow(2) * keep[..., 0]).sum() / (keep[..., 0].sum() * hidden.shape[1] + 1e-8))
                update = update + specific
            hidden = hidden + update

        frame_embeds = vision.post_layernorm(hidden[:, 0]).view(batch, frames_per_clip, -1)
        video_embeds = self.temporal_pooling(frame_embeds)
        features = torch.cat([video_embeds, pulse_embeds], dim=-1) if self.config.use_pulse_embedding else video_embeds
        shared_code = torch.stack(shared_codes).mean(dim=0).view(batch, frames_per_clip, -1).mean(dim=1)
        return PhysioPromptModelOutput(features=features, video_embeds=video_embeds, pulse_embeds=pulse_embeds,
                                       shared_code=shared_code, shared_only=shared_only,
                                       loss_orthogonality=torch.stack(cosines).mean() if cosines else None)


class PhysioPromptForEmotionRecognition(PhysioPromptModel):
    """Frozen CLIP ViT over face frames + pulse prompts + decoupled shared/specific adapters -> valence/arousal.

    Inputs:
        pixel_values: ``(B, T, 3, H, W)`` frames in [0, 1] (resized to the ViT's image size if needed; normalised
            inside with ``config.image_mean/std``).
        tfr_values: ``(B, tfr_channels, F, T')`` pulse time-frequency maps (``facet_vlm.physio.tfr``).
        subject_ids: ``(B,)`` training-subject indices in ``[0, num_train_subjects)``; used only in training.
        labels: ``(B, 2)`` (valence_high, arousal_high) or ``(B, 3)`` with the emotion index last.
        valence_labels, arousal_labels, emotion_labels: ``(B,)`` per-head labels (override ``labels``); -100 skips.
    """

    def __init__(self, config: PhysioPromptConfig):
        super().__init__(config)
        self.heads = EmotionHeads(config)
        self.subject_classifier = SubjectClassifier(config) if config.num_train_subjects > 0 else None
        self.subject_mean_matching = (SubjectMeanMatching(config) if config.num_train_subjects > 0
                                      and config.invariance_weight > 0 else None)
        self.post_init()

    def peft_config_kwargs(self) -> dict:
        """Keyword arguments of the ``peft.LoraConfig`` that trains exactly the adapters, prompts, pooling and heads.

        ``modules_to_save`` lists them (custom modules are saved as full copies); ``target_modules`` is PEFT's dummy
        list (no LoRA layer at all) when ``vit_lora_rank == 0``, else the ViT's q/v projections at that rank.
        """
        modules = ["prompt_generator", "shared_adapter", "temporal_pooling", "heads"]
        if self.config.num_train_subjects > 0:
            modules += ["specific_adapter", "subject_classifier"]
        rank = self.config.vit_lora_rank
        if rank > 0:
            return {"r": rank, "lora_alpha": 2 * rank, "modules_to_save": modules,
                    "target_modules": r"vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|v_proj)"}
        return {"r": 1, "target_modules": PEFT_NO_TARGET_MODULES, "modules_to_save": modules}

    @staticmethod
    def _subject_term_input(backbone: PhysioPromptModelOutput, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, rows) a subject term reads: ``"shared_code"`` of every sample, or ``"video_embeds"`` of the
        shared-only samples (the test-time features)."""
        if which == "shared_code":
            return backbone.shared_code, torch.ones_like(backbone.shared_only)
        return backbone.video_embeds, backbone.shared_only

    def _labels_per_head(self, labels, valence_labels, arousal_labels, emotion_labels):
        if labels is not None:
            labels = torch.as_tensor(labels, device=self.image_mean.device).long()
            if labels.ndim != 2 or labels.shape[1] not in (2, 3):
                raise ValueError(f"labels must be (B, 2) or (B, 3) (valence, arousal[, emotion]), got "
                                 f"{tuple(labels.shape)}")
            valence_labels = labels[:, 0] if valence_labels is None else valence_labels
            arousal_labels = labels[:, 1] if arousal_labels is None else arousal_labels
            if labels.shape[1] == 3 and emotion_labels is None:
                emotion_labels = labels[:, 2]
        return valence_labels, arousal_labels, emotion_labels

    def forward(
        self,
        pixel_values: torch.Tensor,
        tfr_values: torch.Tensor,
        subject_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        valence_labels: torch.Tensor | None = None,
        arousal_labels: torch.Tensor | None = None,
        emotion_labels: torch.Tensor | None = None,
        **kwargs,
    ) -> PhysioPromptOutput:
        valence_labels, arousal_labels, emotion_labels = self._labels_per_head(labels, valence_labels,
                                                                               arousal_labels, emotion_labels)
        groups = label_groups(valence_labels, arousal_labels, pixel_values.shape[0], self.image_mean.device)
        backbone = super().forward(pixel_values, tfr_values, subject_ids, label_groups=groups)
        valence_logits, arousal_logits, emotion_logits = self.heads(backbone.features)
        logits = torch.cat([t for t in (valence_logits, arousal_logits, emotion_logits) if t is not None], dim=-1)

        output = PhysioPromptOutput(logits=logits, valence_logits=valence_logits, arousal_logits=arousal_logits,
                                    emotion_logits=emotion_logits, video_embeds=backbone.video_embeds,
                                    pulse_embeds=backbone.pulse_embeds, shared_code=backbone.shared_code,
                                    features=backbone.features)
        terms = []
        if valence_labels is not None:
            output.loss_valence = F.cross_entropy(valence_logits, torch.as_tensor(valence_labels).long().to(
                logits.device), ignore_index=-100)
            terms.append(output.loss_valence)
        if arousal_labels is not None:
            output.loss_arousal = F.cross_entropy(arousal_logits, torch.as_tensor(arousal_labels).long().to(
                logits.device), ignore_index=-100)
            terms.append(output.loss_arousal)
        if emotion_labels is not None and emotion_logits is not None:
            emotion_targets = torch.as_tensor(emotion_labels).long().to(logits.device)
            if (emotion_targets != -100).any():
                output.loss_emotion = F.cross_entropy(emotion_logits, emotion_targets, ignore_index=-100)
                terms.append(self.config.emotion_loss_weight * output.loss_emotion)
        if terms:
            if backbone.loss_orthogonality is not None:
                output.loss_orthogonality = backbone.loss_orthogonality
                terms.append(self.config.orthogonality_weight * output.loss_orthogonality)
            subjects = None if not self.training or subject_ids is None else \
                torch.as_tensor(subject_ids, device=logits.device).long()
            if subjects is not None and self.subject_classifier is not None:
                read, rows = self._subject_term_input(backbone, self.config.adversary_input)
                if rows.any():
                    if self.config.adversary_objective == "confusion":
                        output.subject_logits, adversary, confusion = self.subject_classifier.confusion_terms(
                            read[rows], subjects[rows])
                        output.loss_adversarial = adversary + confusion
                    else:
                        output.subject_logits = self.subject_classifier(read[rows])
                        output.loss_adversarial = F.cross_entropy(output.subject_logits, subjects[rows])
                    terms.append(self.config.adversarial_weight * output.loss_adversarial)
            if subjects is not None and self.subject_mean_matching is not None:
                read, rows = self._subject_term_input(backbone, self.config.invariance_input)
                if rows.any():
                    output.loss_invariance = self.subject_mean_matching(read[rows], subjects[rows], groups[rows])
                    terms.append(self.config.invariance_weight * output.loss_invariance)
            output.loss = torch.stack(terms).sum()
        return output


__all__ = ["PhysioPromptForEmotionRecognition", "PhysioPromptModel", "PhysioPromptModelOutput", "PhysioPromptOutput",
           "PhysioPromptPreTrainedModel", "ratings_to_labels"]
