"""Configuration of CoupleFER: a CLIP-style ViT on the 2D texture and a point-patch transformer on the 3D scan,
coupled layer by layer by CouPle prompts and trained with dual-level (sample + cluster) supervision."""

from __future__ import annotations

from transformers import CLIPVisionConfig, PreTrainedConfig

COUPLE_MODES = ("2d_to_3d", "bidirectional", "off")
FUSION_MODES = ("concat", "sum")
PROTOTYPE_MODES = ("learned", "ema")
NEUTRAL_REFERENCES = ("none", "difference")


class CoupleFERConfig(PreTrainedConfig):
    r"""Configuration of [`CoupleFERForExpressionRecognition`].

    The defaults build the image branch as CLIP ViT-B/16 (so `openai/clip-vit-base-patch16` vision weights load
    through `CoupleFERForExpressionRecognition.from_clip`) and a point branch of the same depth (12 layers, width
    384, Point-MAE-like: 128 patches of 32 points). Parameter count of the default config with 7 classes:
    119,142,561 (image branch 85.8 M, point branch 21.8 M, CouPle 2D→3D prompt generators 10.7 M, projections,
    heads and prototypes 0.8 M). `couple_mode="off"` drops the prompt generators (108.4 M); `"bidirectional"` adds
    the 3D→2D ones at the image width (151.1 M).

    Args:
        vision_config (`dict` or `CLIPVisionConfig`, *optional*):
            The image branch, a CLIP vision transformer. Its `num_hidden_layers` is also the depth of the point
            branch (CouPle needs one image layer per point layer). Its `initializer_factor` is not used: CoupleFER
            initialises its linear layers from `initializer_range` (or with std 1/sqrt(fan-in)).
        normalize_pixels (`bool`, defaults to `True`):
            Apply CLIP mean/std normalisation inside the model, so that `pixel_values` are plain RGB in [0, 1]
            (what the processor and `facet_vlm.geometry.render_views` produce). Set `False` if you normalise outside.
        image_mean, image_std (`list[float]`): the normalisation constants (CLIP's by default).
        point_input_dim (`int`, defaults to 6): per-point features used: 6 = xyz + normal, 9 = xyz + normal + rgb.
            Inputs with 9 columns are accepted by a 6-feature model (the colour columns are ignored).
        normalize_points (`bool`, defaults to `True`): centre every cloud on its centroid and scale it into the
            unit ball inside the model, so raw millimetre scans can be fed directly.
        num_point_groups (`int`, defaults to 128): G, the number of patch centres chosen by farthest-point sampling.
        point_group_size (`int`, defaults to 32): k, the points per patch (k nearest neighbours of a centre). Points
            outside every patch never reach the model: keep ``num_point_groups * point_group_size`` at least the
            number of points (patches overlap, so that covers most points, not all). The small recipes' 32 x 16
            over 1024 points held 510 of them, 32 x 32 hold 875, and the latter was 4.4 points better on the
            real-motion development benchmark (75.4 against 71.0 %, docs/real_motion.md).
        point_hidden_size, point_intermediate_size, point_num_attention_heads: width of the point transformer.
        point_embed_hidden_size (`int`, defaults to 128): width of the first shared MLP of the mini-PointNet.
        num_prompt_tokens (`int`, defaults to 8): P, prompt tokens made by CouPle at every layer.
        couple_mode (`str`, defaults to `"2d_to_3d"`): `"2d_to_3d"` image tokens prompt the point branch;
            `"bidirectional"` additionally point tokens prompt the image branch; `"off"` no coupling (gate fixed to
            0: the prompt generators are not built and the point branch is independent of the image).
        couple_gate_init (`float`, defaults to 0.1): initial value g of the per-layer gate; prompts are scaled by
            tanh(g), so coupling starts weak and is learned (a zero init would make the branch blind at step 0).
        projection_dim (`int`, defaults to 512): size of the projected image and point embeddings (the space of the
            2D↔3D contrastive term).
        fusion (`str`, defaults to `"concat"`): fused embedding = concatenation (`2 * projection_dim`) or sum of
            the two L2-normalised projected embeddings.
        ce_loss_weight (`float`, defaults to 1.0): cross-entropy on the fused head.
        branch_ce_loss_weight (`float`, defaults to 0.5): cross-entropy on the image and point heads (their mean).
        contrastive_loss_weight (`float`, defaults to 0.1): symmetric 2D↔3D InfoNCE between the image and point
            embeddings of the same face (other faces of the batch are the negatives).
        contrastive_temperature (`float`, defaults to 0.07).
        prototype_loss_weight (`float`, defaults to 0.1): cluster-level term, cross-entropy over cosine similarities
            between the fused embedding and the class prototypes (pulls a sample to its class prototype and pushes
            it from the others).
        prototype_mode (`str`, defaults to `"learned"`): prototypes are learned parameters, or `"ema"` class
            centres updated with momentum from the batch embeddings (no gradient to the prototypes; in distributed
            training the update is reduced over all processes first, so their prototypes stay identical).
        prototype_temperature (`float`, defaults to 0.1); prototype_momentum (`float`, defaults to 0.9, EMA only).
        input_modality (`str`, defaults to `"both"`): `"image"` or `"points"` is the single-modality ablation: the
            prediction (`logits`) is that branch's head and the loss is that head's cross-entropy only; `couple_mode`
            is then forced to `"off"` so that the branch does not see the other modality through the prompts. (Both
            inputs are still passed and both branches still run; the other branch gets no gradient.)
        neutral_reference (`str`, defaults to `"none"`): `"difference"` gives the model the same person's neutral
            scan as a reference (BU-3DFE and Bosphorus have one per subject, a 4D sequence its neutral frame): the
            forward pass then needs `neutral_pixel_values` (the neutral scan's texture view) and
            `neutral_point_offsets` (B, N), each point's signed distance from the neutral surface (the processor's
            `neutral_faces=`). The image branch adds a patch embedding of the texture difference (its own
            convolution, so CLIP weights still load into the texture one) to its patch tokens; the point branch
            gets the offset as one more per-point feature. Real brow and lip motion is 2-6 mm, about one pixel of
            a 64-px view and below the 7 mm spacing of 1024 sampled points; what moved shows against the neutral
            face. The paper does not use a reference; this is the library's option.
        neutral_difference_gain (`float`, defaults to 10.0): the texture difference (after CLIP normalisation) and
            the point offsets (in the units of the normalised cloud) are multiplied by this, so that a few
            millimetres of motion reach the size of the other inputs.
        label_smoothing (`float`, defaults to 0.0): for the cross-entropy terms.
        hidden_dropout (`float`, defaults to 0.0): dropout before the heads.
        layer_norm_eps, initializer_range: as usual.

    Example:
    ```python
    >>> from couple import CoupleFERConfig, CoupleFERForExpressionRecognition
    >>> config = CoupleFERConfig(vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    ...     "num_attention_heads": 2, "image_size": 32, "patch_size": 8}, point_hidden_size=32,
    ...     point_intermediate_size=64, point_num_attention_heads=2, num_point_groups=8, point_group_size=8,
    ...     projection_dim=16, num_labels=6)
    >>> model = CoupleFERForExpressionRecognition(config)
    ```
    """

    model_type = "couplefer"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig}

    vision_config: dict | CLIPVisionConfig | None = None
    normalize_pixels: bool = True
    image_mean: list[float] | tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    image_std: list[float] | tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    point_input_dim: int = 6
    normalize_points: bool = True
    num_point_groups: int = 128
    point_group_size: int = 32
    point_hidden_size: int = 384
    point_intermediate_size: int = 1536
    point_num_attention_heads: int = 6
    point_embed_hidden_size: int = 128
    num_prompt_tokens: int = 8
    couple_mode: str = "2d_to_3d"
    couple_gate_init: float = 0.1
    projection_dim: int = 512
    fusion: str = "concat"
    ce_loss_weight: float = 1.0
    branch_ce_loss_weight: float = 0.5
    contrastive_loss_weight: float = 0.1
    contrastive_temperature: float = 0.07
    prototype_loss_weight: float = 0.1
    prototype_mode: str = "learned"
    prototype_temperature: float = 0.1
    prototype_momentum: float = 0.9
    input_modality: str = "both"
    neutral_reference: str = "none"
    neutral_difference_gain: float = 10.0
    label_smoothing: float = 0.0
    hidden_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.vision_config is None:
            self.vision_config = {"patch_size": 16}
        self.image_mean = list(self.image_mean)
        self.image_std = list(self.image_std)
        if self.input_modality != "both":
            self.couple_mode = "off"
        super().__post_init__(**kwargs)
        self._check()

    def _check(self) -> None:
        choices = {"couple_mode": COUPLE_MODES, "fusion": FUSION_MODES, "prototype_mode": PROTOTYPE_MODES,
                   "input_modality": ("both", "image", "points"), "neutral_reference": NEUTRAL_REFERENCES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"CoupleFERConfig.{name}={getattr(self, name)!r}; expected one of {allowed}")
        if self.point_input_dim not in (6, 9):
            raise ValueError(f"CoupleFERConfig.point_input_dim={self.point_input_dim}; expected 6 (xyz+normal) or 9")
        if self.point_hidden_size % self.point_num_attention_heads:
            raise ValueError(
                f"CoupleFERConfig.point_hidden_size={self.point_hidden_size} is not divisible by "
                f"point_num_attention_heads={self.point_num_attention_heads}"
            )
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("CoupleFERConfig.image_mean and image_std need 3 values (RGB)")
        if self.num_prompt_tokens < 1 or self.num_point_groups < 1 or self.point_group_size < 1:
            raise ValueError("CoupleFERConfig: num_prompt_tokens, num_point_groups and point_group_size must be >= 1")
        for name in ("contrastive_temperature", "prototype_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"CoupleFERConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("ce_loss_weight", "branch_ce_loss_weight", "contrastive_loss_weight", "prototype_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"CoupleFERConfig.{name} must be >= 0 (0 switches the term off)")
        if not 0.0 <= self.prototype_momentum < 1.0:
            raise ValueError(f"CoupleFERConfig.prototype_momentum must be in [0, 1), got {self.prototype_momentum}")

    @property
    def neutral_input_names(self) -> tuple[str, ...]:
        """The inputs that come from the neutral scan (``neutral_`` + name); empty without a neutral reference."""
        return () if self.neutral_reference == "none" else ("pixel_values", "point_offsets")

    @property
    def num_hidden_layers(self) -> int:
        """Depth of both branches (the image branch sets it)."""
        return self.vision_config.num_hidden_layers


__all__ = ["CoupleFERConfig"]
