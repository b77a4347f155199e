"""Configuration of AFNet-M: two ResNet-style CNN branches (2D texture, 3D depth + normal maps) with mask attention
(FiLM-like modulation from facial-region masks and spatial weighting of the salient regions) and input-dependent
importance-weight fusion at several stages."""

from __future__ import annotations

from transformers import PreTrainedConfig

REGION_NAMES = ("eyes", "brows", "nose", "mouth")


class AFNetMConfig(PreTrainedConfig):
    r"""Configuration of [`AFNetMForExpressionRecognition`].

    Stage sizes follow `transformers.ResNetConfig` (`embedding_size`, `hidden_sizes`, `depths`, basic blocks). The
    default is a half-width ResNet-18 per branch at 112×112, in keeping with the paper's small-model claim:
    6,094,893 parameters with 7 classes (two branches 2.80 M each, mask attention 0.42 M, importance-weight fusion
    0.06 M, region template and head 0.01 M).

    Args:
        num_channels (`int`, defaults to 3): channels of `pixel_values` (RGB texture in [0, 1]).
        geometry_channels (`int`, defaults to 4): channels of `geometry_values` (depth in [0, 1] + normal xyz in
            [-1, 1]).
        image_size (`int`, defaults to 112): the size the processor renders; the network itself accepts any size.
        embedding_size (`int`, defaults to 32): width of the stem (7×7 stride-2 conv + 3×3 max-pool).
        hidden_sizes (`list[int]`, defaults to `(32, 64, 128, 256)`): width of every stage.
        depths (`list[int]`, defaults to `(2, 2, 2, 2)`): basic blocks per stage; stages after the first halve the
            resolution.
        num_regions (`int`, defaults to 4): R, channels of `region_masks` (eyes, brows, nose, mouth).
        mask_attention_stages (`list[int]`, defaults to all stages): 0-based stages after which mask attention
            modulates both branches.
        mask_hidden_size (`int`, defaults to 32): width of the small conv net of mask attention.
        mask_spatial_weighting (`bool`, defaults to `True`): besides the per-channel scale and shift, mask attention
            weights the feature maps spatially by the salient regions: every position is multiplied by
            `b + (1 - b) * m`, where m is the union (pixel-wise maximum, clipped to [0, 1]) of the region masks at
            the stage resolution and b is `mask_background_weight`. Inside a region the features pass unchanged,
            outside every region they are scaled by b. `False` keeps the scale/shift modulation alone.
        mask_background_weight (`float`, defaults to 0.5): b above, in [0, 1]; 1 makes the spatial weighting the
            identity, 0 removes everything outside the regions. The paper's abstract says only that the network
            focuses on salient regions; 0.5 (damp the rest of the face, keep it visible to later stages) is this
            library's choice.
        template_size (`int`, defaults to 56): resolution of the region template used when `region_masks` is None.
        learnable_template (`bool`, defaults to `True`): the template starts as Gaussian blobs at the canonical
            positions of eyes, brows, nose and mouth in an aligned frontal face and is learned; `False` keeps it
            fixed.
        fusion_stages (`list[int]`, *optional*): 0-based stages after which the branches are fused (the fused map is
            added back to both branches); defaults to every stage but the first (`[1, 2, 3]` for four stages). The
            last stage is always a fusion stage (its fused map feeds the classifier).
        importance_weight_stages (`list[int]`, *optional*): the fusion stages whose modality weights come from the
            input-dependent importance-weight module; the other fusion stages average the branches with fixed equal
            weights (0.5, 0.5). Defaults to every fusion stage, the last included; `[]` is the equal-weight
            ablation. Must be a subset of `fusion_stages`.
        fusion_hidden_size (`int`, defaults to 64): hidden width of the importance-weight MLP.
        input_modality (`str`, defaults to `"both"`): `"2d"` or `"3d"` is the single-modality ablation: at every
            fusion stage the "fused" map is that branch's own map (modality weights one-hot) and nothing is added
            back across branches, so the prediction depends on the texture (2d) or the geometry (3d) input only.
            (Both inputs are still passed and both branches still run; the other gets no gradient.)
        normalize_pixels (`bool`, defaults to `True`): ImageNet mean/std normalisation of the texture inside the
            model, so `pixel_values` stay plain RGB in [0, 1].
        image_mean, image_std (`list[float]`): those constants.
        label_smoothing (`float`, defaults to 0.1): for the cross-entropy loss.
        hidden_dropout (`float`, defaults to 0.2): dropout before the classifier.
        batch_norm_eps (`float`, defaults to 1e-5).
        initializer_range (`float`, defaults to 0.02): std of the linear layers (convs use He initialisation).
        channels_last (`bool`, defaults to `False`): run both CNNs in channels-last (NHWC) memory format, which
            cuDNN and oneDNN convolutions prefer (tensor cores under bf16/fp16); outputs are the same.
        neutral_reference (`str`, defaults to `"none"`): `"difference"` gives the model the same person's neutral
            face as a reference: the forward pass then needs `neutral_pixel_values` and `neutral_geometry_values`
            (the neutral scan rendered like the expressive one; BU-3DFE and Bosphorus have a neutral scan per
            subject, a 4D sequence its neutral frame) and each branch sees its input stacked with the difference
            from the neutral input (`num_channels` and `geometry_channels` doubled at the stems). Real brow and lip
            movements are 2-6 mm, one or two pixels of a 64-px view, and people's faces differ far more than
            that; the difference removes the identity and keeps the motion, as the landmark classifiers that use
            the neutral face do. The papers do not use a reference; this is the library's option.
        neutral_difference_gain (`float`, defaults to 10.0): the difference channels are multiplied by this before
            the stem. Depth is normalised to the crop (a 3 mm movement is about 0.02 of it), so without a gain the
            difference would be two orders of magnitude below the other channels at initialisation; 10 is this
            library's choice, not tuned.

    Example:
    ```python
    >>> from couple import AFNetMConfig, AFNetMForExpressionRecognition
    >>> config = AFNetMConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], fusion_stages=[0, 1],
    ...     num_labels=6)
    >>> model = AFNetMForExpressionRecognition(config)
    ```
    """

    model_type = "afnet_m"

    num_channels: int = 3
    geometry_channels: int = 4
    image_size: int = 112
    embedding_size: int = 32
    hidden_sizes: list[int] | tuple[int, ...] = (32, 64, 128, 256)
    depths: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    num_regions: int = 4
    mask_attention_stages: list[int] | tuple[int, ...] | None = None
    mask_hidden_size: int = 32
    mask_spatial_weighting: bool = True
    mask_background_weight: float = 0.5
    template_size: int = 56
    learnable_template: bool = True
    fusion_stages: list[int] | tuple[int, ...] | None = None
    importance_weight_stages: list[int] | tuple[int, ...] | None = None
    fusion_hidden_size: int = 64
    input_modality: str = "both"
    normalize_pixels: bool = True
    image_mean: list[float] | tuple[float, ...] = (0.485, 0.456, 0.406)
    image_std: list[float] | tuple[float, ...] = (0.229, 0.224, 0.225)
    label_smoothing: float = 0.1
    hidden_dropout: float = 0.2
    batch_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    channels_last: bool = False
    neutral_reference: str = "none"
    neutral_difference_gain: float = 10.0

    def __post_init__(self, **kwargs):
        self.hidden_sizes = list(self.hidden_sizes)
        self.depths = list(self.depths)
        num_stages = len(self.hidden_sizes)
        if self.mask_attention_stages is None:
            self.mask_attention_stages = list(range(num_stages))
        self.mask_attention_stages = sorted(set(self.mask_attention_stages))
        if self.fusion_stages is None:
            self.fusion_stages = list(range(1, num_stages))
        self.fusion_stages = sorted(set(self.fusion_stages) | {num_stages - 1})
        if self.importance_weight_stages is None:
            self.importance_weight_stages = list(self.fusion_stages)
        self.importance_weight_stages = sorted(set(self.importance_weight_stages))
        self.image_mean = list(self.image_mean)
        self.image_std = list(self.image_std)
        super().__post_init__(**kwargs)
        self._check()

    @property
    def neutral_input_names(self) -> tuple[str, ...]:
        """The inputs that need a neutral counterpart (``neutral_`` + name); empty without a neutral reference."""
        return () if self.neutral_reference == "none" else ("pixel_values", "geometry_values")

    def _check(self) -> None:
        if self.neutral_reference not in ("none", "difference"):
            raise ValueError(f"neutral_reference must be 'none' or 'difference', got {self.neutral_reference!r}")
        if self.input_modality not in ("both", "2d", "3d"):
            raise ValueError(f"input_modality must be 'both', '2d' or '3d', got {self.input_modality!r}")
        num_stages = len(self.hidden_sizes)
        if num_stages == 0 or len(self.depths) != num_stages or min(self.depths) < 1:
            raise ValueError(
                f"AFNetMConfig: hidden_sizes {self.hidden_sizes} and depths {self.depths} need the same non-zero "
                "length and depths >= 1"
            )
        for name in ("mask_attention_stages", "fusion_stages", "importance_weight_stages"):
            stages = getattr(self, name)
            if any(stage < 0 or stage >= num_stages for stage in stages):
                raise ValueError(f"AFNetMConfig.{name}={stages}: stages are 0-based indices below {num_stages}")
        outside = sorted(set(self.importance_weight_stages) - set(self.fusion_stages))
        if outside:
            raise ValueError(
                f"AFNetMConfig.importance_weight_stages={self.importance_weight_stages}: stages {outside} are not "
                f"fusion stages {self.fusion_stages}"
            )
        if not 0.0 <= self.mask_background_weight <= 1.0:
            raise ValueError(
                f"AFNetMConfig.mask_background_weight must be in [0, 1], got {self.mask_background_weight}"
            )
        if self.num_regions < 1:
            raise ValueError(f"AFNetMConfig.num_regions must be >= 1, got {self.num_regions}")
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ValueError("AFNetMConfig.image_mean and image_std need one value per texture channel")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"AFNetMConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")


__all__ = ["AFNetMConfig", "REGION_NAMES"]
