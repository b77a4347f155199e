"""FACET-VLM model configuration.

This file is Hub remote code: it imports only transformers (and is copied next to `config.json` by `save_pretrained`).
"""

from __future__ import annotations

from typing import Any

from transformers import CLIPTextConfig, CLIPVisionConfig, PretrainedConfig

#: Input channels of each renderer channel group (texture RGB, depth, surface normal xyz, Lambert-shaded geometry).
CHANNEL_GROUP_WIDTHS = {"texture": 3, "depth": 1, "normal": 3, "shaded": 1}

#: CLIP's image normalisation (openai/clip-vit-*).
CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

#: Defaults copied from `facet_vlm.labels` (this file may not import the package; a test keeps the copies in sync).
DEFAULT_LABELS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
DEFAULT_PROMPT_TEMPLATES = (
    "a 3D scan of a face showing {}.",
    "a rendering of a face with {}.",
    "a photo of a person with {}.",
    "a depth map of a face showing {}.",
)
DEFAULT_CLASS_DESCRIPTIONS = {
    "anger": ("anger", "an angry expression", "lowered brows and pressed lips"),
    "disgust": ("disgust", "a disgusted expression", "a wrinkled nose and raised upper lip"),
    "fear": ("fear", "a fearful expression", "raised brows, wide eyes and stretched lips"),
    "happiness": ("happiness", "a happy smile", "raised cheeks and pulled lip corners"),
    "sadness": ("sadness", "a sad expression", "raised inner brows and lowered lip corners"),
    "surprise": ("surprise", "a surprised expression", "raised brows and a dropped jaw"),
    "neutral": ("neutral", "a neutral expression", "relaxed facial muscles"),
}
DEFAULT_VIEW_ANGLES = ((0.0, 0.0), (30.0, 0.0), (-30.0, 0.0), (0.0, 20.0), (0.0, -20.0))
TEXT_BACKENDS = ("transformers", "open_clip")
PATCH_STEMS = ("linear", "conv")
CLASS_HEADS = ("text", "linear")
#: The prompt of a class description when learned context tokens stand in for the template words (CoOp): the context
#: vectors go between the start token and the description, so only the description and the full stop are text.
CONTEXT_PROMPT_TEMPLATE = "{}."
FRAME_REFERENCES = ("none", "subtract_first", "append_first")
#: What `FacetVLMConfig.neutral_reference` may be.
NEUTRAL_REFERENCES = ("none", "difference")


def ensemble_prompts(
    label: str,
    templates: list[str] | tuple[str, ...],
    descriptions: dict[str, Any] | None = None,
) -> list[str]:
    """The prompt ensemble of one class: every template filled with every description of the class."""
    words = (descriptions or {}).get(label) or (label,)
    return [template.format(word) for template in templates for word in words]


def default_prompt_tokenizer() -> Any:
    """The tokenizer that fills `FacetVLMConfig.prompt_input_ids`: CLIP's byte-pair encoding from the vocabulary file
    of open_clip (`tokenization_facet_vlm.clip_token_ids`), or None where open_clip is not installed (Hub remote code
    on a machine without it: saved configs carry their token ids, so none is needed there)."""
    try:
        from .tokenization_facet_vlm import clip_token_ids, vocabulary_available
    except ImportError:
        return None
    return clip_token_ids if vocabulary_available() else None


def context_init_ids(tokenizer: Any, phrase: str) -> list[int]:
    """Token ids of a context-init phrase without the start and end tokens (a callable ``list[str] ->
    list[list[int]]`` or a transformers tokenizer, as `FacetVLMConfig.tokenize_prompts` takes)."""
    encoded = tokenizer([phrase])
    ids = encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded
    return [int(t) for t in ids[0][1:-1]]


class FacetVLMConfig(PretrainedConfig):
    r"""Configuration of [`FacetVLMModel`] and [`FacetVLMForExpressionRecognition`].

    A 3D face is rendered into `num_views` views; every channel group of every view (texture RGB, depth, normals)
    goes through one shared CLIP vision tower as a 3-channel image. Cross-view semantic aggregation (CVSA) turns
    the view tokens into one view-consistent face embedding, and multiview text-guided fusion (MTGF) lets the CLIP
    text embedding of every class (a prompt ensemble) weight the views. Logits are scaled cosine similarities.

    Args:
        text_config (`dict` or `CLIPTextConfig`, *optional*): the CLIP text tower; defaults to CLIP ViT-B/16's.
        vision_config (`dict` or `CLIPVisionConfig`, *optional*): the CLIP vision tower; defaults to ViT-B/16
            (hidden 768, 12 layers, patch 16, image 224); a dict without `patch_size` gets 16.
        projection_dim (`int`, defaults to 512): size of the joint image-text space (CLIP's projection).
        logit_scale_init_value (`float`, defaults to 2.6592): initial log of the logit scale (CLIP's ln(1/0.07));
            `from_clip` copies the pretrained value instead.
        num_views (`int`, defaults to 5): number of rendered views V.
        view_angles (`list[tuple[float, float]]`, *optional*): (yaw, pitch) in degrees of every view; defaults to
            frontal, yaw +-30, pitch +-20. Used by the processor to render; its length must be `num_views`.
        channels (`list[str]`, defaults to `("texture", "depth", "normal")`): renderer channel groups in input order;
            known groups and widths: texture 3, depth 1, normal 3, shaded 1.
        image_size (`int`, *optional*): render size; defaults to `vision_config.image_size` and must equal it.
        image_mean / image_std (`tuple[float]`, defaults to CLIP's): normalisation applied inside the model after
            mapping every group to RGB in [0, 1] (depth replicated, normals as (n + 1) / 2).
        patch_stem (`str`, defaults to `"linear"`): how the vision tower turns an image into patch tokens.
            `"linear"` is CLIP's (one patch_size x patch_size convolution with stride patch_size: what pretrained
            CLIP weights expect). `"conv"` replaces it by a convolutional stem (Xiao et al. 2021, "Early
            convolutions help transformers see better"): log2(patch_size) stride-2 3x3 convolutions with batch norm
            and GELU, then a 1x1 convolution to the hidden size; same token grid and position embeddings, a
            locality prior that helps a tower trained from scratch on few subjects. `patch_size` must then be a
            power of two; `from_clip` keeps the linear stem.
        conv_stem_channels (`list[int]`, *optional*): output channels of the stride-2 convolutions of the conv
            stem (one per halving); defaults to hidden_size / 2^(n-1), ..., hidden_size / 2, hidden_size, at least 8.
        use_view_embeddings (`bool`, defaults to `True`): add a learned embedding per view (and per channel group).
            Without them CVSA and MTGF are set functions of the views: permuting views changes nothing.
        use_cvsa (`bool`, defaults to `True`): cross-view semantic aggregation; off means view features are the
            projected CLIP embeddings and the face embedding is their mean.
        cvsa_layers (`int`, defaults to 2) / cvsa_heads (`int`, defaults to 8): depth and heads of CVSA.
        cvsa_intermediate_size (`int`, *optional*): MLP width of CVSA/temporal layers; defaults to 4 x projection_dim.
        cvsa_use_patch_tokens (`bool`, defaults to `False`): let view tokens also attend to pooled patch tokens.
        cvsa_patch_grid (`int`, defaults to 2): patch tokens of each image are average-pooled to a grid x grid map.
        use_mtgf (`bool`, defaults to `True`): multiview text-guided fusion; off means logits compare the face
            embedding itself with the class text embeddings.
        mtgf_heads (`int`, defaults to 8): heads of the text-to-view cross-attention.
        dropout (`float`, defaults to 0.0): dropout inside CVSA, MTGF and the temporal transformer.
        num_frames (`int`, defaults to 16): largest number of frames T of a 4D sequence (learned positions).
        temporal_layers (`int`, defaults to 2): temporal transformer depth for 4D inputs.
        frame_reference (`str`, defaults to `"none"`): what the temporal transformer sees of frame t of a 4D
            sequence, per stream (the fused face embedding and every MTGF class embedding) x_t: `"none"` x_t;
            `"subtract_first"` x_t - x_1, the change since the first frame (our choice for subject-independent 4D
            FER: a clip starts neutral, so the difference keeps the expression's deformation and cancels what the
            first frame shares with the others, the subject's identity); `"append_first"` a linear map of the
            concatenation [x_t, x_t - x_1] back to the embedding size (both the frame and its change).
        neutral_reference (`str`, defaults to `"none"`): `"difference"` gives the model the same person's neutral
            scan as a reference (BU-3DFE and Bosphorus have one per subject): the forward pass then needs
            `neutral_pixel_values`, the neutral scan rendered into the same views and channels, the expressive scan
            registered to it on the stable landmarks (the processor's `neutral_faces=`). Every channel-group image of
            every view is compared with the neutral one: their difference (after CLIP normalisation, times
            `neutral_difference_gain`) goes through its own patch stem (`neutral_stem`: a copy of the tower's stem,
            convolutional or linear, with its own weights) and is added to the tower's patch tokens, so the CLIP
            weights still load and a model pretrained without a reference can be fine-tuned with one (the stem is
            the only new module). Real brow and lip motion is 2-6 mm, one or two pixels of a 64-px view; against the
            neutral face it is what differs. The paper does not use a reference; this is the library's option. A 4D
            sequence (B, T, ...) takes one neutral render per sequence, compared with every frame.
        neutral_difference_gain (`float`, defaults to 10.0): the rendered difference is multiplied by this, so that a
            few millimetres of motion reach the size of the other inputs.
        consistency_weight (`float`, defaults to 0.5): weight of the multiview consistency loss; 0 disables it. The
            loss runs on each view's own embedding and prediction, taken before CVSA mixes the views: every view's
            prediction is pulled toward the (detached) fused prediction.
        use_consistency_margin (`bool`, defaults to `True`): add the margin term to the consistency loss: per-view
            embeddings of the same class in the batch are pulled together, those of different classes pushed apart
            by `consistency_margin`. Off, the consistency loss is the view agreement alone.
        consistency_margin (`float`, defaults to 0.5): embeddings of different classes are pushed until their cosine
            distance (1 - cos) exceeds this margin.
        label_smoothing (`float`, defaults to 0.0): label smoothing of the cross-entropy.
        id2label / label2id (`dict`, *optional*): the class set; defaults to the six basic expressions.
        prompt_templates (`list[str]`, *optional*): templates with one `{}`; defaults to `facet_vlm.labels`'.
        class_descriptions (`dict[str, list[str]]`, *optional*): words a prompt may use per class; defaults to the
            descriptions of the basic expressions in `facet_vlm.labels`. A class without an entry uses its name.
        label_prompts (`dict[str, list[str]]`, *optional*): the prompt ensemble of each class; derived from the
            templates and descriptions when not given.
        prompt_input_ids (`list[list[list[int]]]`, *optional*): token ids of every prompt of every class (unpadded,
            with start/end tokens). Filled by `default_prompt_tokenizer` (CLIP's byte-pair encoding, from the
            vocabulary that ships with open_clip) when not given; stored so that a saved model reloads its classes
            offline without any tokenizer.
        center_text_embeds (`bool`, defaults to `True`): subtract the mean over classes from the class text
            embeddings before L2-normalising them. Prompt ensembles share most of their words, so raw class embeddings
            lie close together (pairwise cosine ~0.95 measured for a randomly initialised text tower; pretrained
            CLIP prompts are strongly correlated too) and scaled cosines barely separate the classes; centring
            removes the shared direction. The ranking of classes for a given face changes only through the
            per-class norms, so zero-shot use keeps working. Ignored with a single class.
        freeze_text_tower (`bool`, defaults to `True`): keep the text tower's weights fixed. Without learned context
            tokens and text-tower LoRA the class text embeddings are then computed once per label set and cached;
            when anything on the text side trains they are recomputed with gradients at every training step and
            cached again in evaluation. Without CLIP weights a frozen random text tower maps the prompts to fixed
            random vectors: their wording carries no meaning (learned context tokens give that path something to
            learn).
        class_head (`str`, defaults to `"text"`): how the logits are made. `"text"`: scaled cosine similarities with
            the class text embeddings (and MTGF queries the views with them), the method of the paper. `"linear"`:
            a plain linear classifier on the fused face embedding (and on each view's own embedding for the
            consistency loss); the text tower, the prompts and MTGF are not built. The ablation that says what
            the text side adds.
        prompt_context_length (`int`, defaults to 0): number of learned context vectors (CoOp: Zhou et al., "Learning
            to Prompt for Vision-Language Models", IJCV 2022) placed between the start token and the words of each
            class description, in the text tower's token-embedding space: they replace the template words, the
            class name (or description) tokens are kept. 0 keeps the fixed prompts of `prompt_templates`. With
            context the default prompts of a class are its descriptions alone (`"{description}."`), one prompt per
            description (a prompt ensemble); the context trains with the model, so the text path learns even when
            the text tower is frozen and random.
        prompt_context_init (`str`, *optional*): initial value of the context vectors. None: random normal with std
            0.02 (CoOp's random init). A phrase (e.g. `"a 3D scan of a face showing"`): the token embeddings of its
            words (CoOp's init from a template; meaningful with CLIP weights), then `prompt_context_length` must be
            0 (taken from the phrase) or its number of tokens.
        prompt_context_class_specific (`bool`, defaults to `False`): one context per class (CoOp's class-specific
            context, CSC) instead of one shared by all classes. A new label set keeps the context of every class it
            shares with the old one and starts new classes from the mean of the old classes' contexts; a shared
            context is reused as it is.
        prompt_context_init_ids (`list[int]`, *optional*): token ids of `prompt_context_init` (without start/end
            tokens), filled by the tokenizer like `prompt_input_ids` and stored so that a saved config rebuilds the
            same initial context offline.
        text_tower_lora (`bool`, defaults to `False`): with `--peft lora`, also put LoRA adapters into the text tower
            (they adapt CLIP's text features to the task); off, LoRA goes into the vision tower only and the text
            tower stays as loaded (the paper's setting).
        starting_weights (`dict`, *optional*): where the towers' weights came from, for the record: `vision_tower`
            and `text_tower` each `"random"`, a CLIP name or path, or a saved model's path, and
            `text_tower_trained` (bool); written by `from_clip` and by the training run, shown by the model card and
            the Space. None for a model built from a config (every tower random).
        text_backend (`str`, defaults to `"transformers"`): where the pretrained CLIP came from, `"transformers"`
            or `"open_clip"` (both are converted to transformers' CLIP towers and use the same BPE tokenizer).
        pretrained_clip_name (`str`, *optional*): name or path given to `from_clip`, for the record.

    Parameter counts of the default (ViT-B/16) configuration: vision tower 85.8M, text tower 63.2M, projections
    0.66M, CVSA 6.6M, MTGF 1.05M, temporal transformer 6.6M (8K of them frame positions); 163.8M in all, of which
    100.4M train when the text tower is frozen (the default).

    Errors: inconsistent values raise `ValueError` naming the field (this file cannot import the package's
    `ConfigError`).

    Example:

    ```python
    >>> from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition
    >>> config = FacetVLMConfig(
    ...     vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    ...                    "intermediate_size": 64, "image_size": 32, "patch_size": 8},
    ...     text_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    ...     projection_dim=32, cvsa_heads=2, mtgf_heads=2,
    ... )
    >>> model = FacetVLMForExpressionRecognition(config)
    >>> model.config.num_labels
    6
    ```
    """

    model_type = "facet_vlm"
    sub_configs_defaults = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}

    def __init__(
        self,
        text_config: dict | CLIPTextConfig | None = None,
        vision_config: dict | CLIPVisionConfig | None = None,
        projection_dim: int = 512,
        logit_scale_init_value: float = 2.6592,
        num_views: int = 5,
        view_angles: list | tuple | None = None,
        channels: list[str] | tuple[str, ...] = ("texture", "depth", "normal"),
        image_size: int | None = None,
        image_mean: list[float] | tuple[float, ...] = CLIP_IMAGE_MEAN,
        image_std: list[float] | tuple[float, ...] = CLIP_IMAGE_STD,
        patch_stem: str = "linear",
        conv_stem_channels: list[int] | None = None,
        use_view_embeddings: bool = True,
        use_cvsa: bool = True,
        cvsa_layers: int = 2,
        cvsa_heads: int = 8,
        cvsa_intermediate_size: int | None = None,
        cvsa_use_patch_tokens: bool = False,
        cvsa_patch_grid: int = 2,
        use_mtgf: bool = True,
        mtgf_heads: int = 8,
        dropout: float = 0.0,
        num_frames: int = 16,
        temporal_layers: int = 2,
        frame_reference: str = "none",
        neutral_reference: str = "none",
        neutral_difference_gain: float = 10.0,
        consistency_weight: float = 0.5,
        use_consistency_margin: bool = True,
        consistency_margin: float = 0.5,
        label_smoothing: float = 0.0,
        prompt_templates: list[str] | tuple[str, ...] | None = None,
        class_descriptions: dict[str, list[str]] | None = None,
        label_prompts: dict[str, list[str]] | None = None,
        prompt_input_ids: list[list[list[int]]] | None = None,
        center_text_embeds: bool = True,
        freeze_text_tower: bool = True,
        class_head: str = "text",
        prompt_context_length: int = 0,
        prompt_context_init: str | None = None,
        prompt_context_class_specific: bool = False,
        prompt_context_init_ids: list[int] | None = None,
        text_tower_lora: bool = False,
        starting_weights: dict[str, Any] | None = None,
        text_backend: str = "transformers",
        pretrained_clip_name: str | None = None,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ):
        if text_config is None:
            text_config = CLIPTextConfig()
        elif isinstance(text_config, dict):
            text_config = CLIPTextConfig(**{k: v for k, v in text_config.items() if k != "model_type"})
        if vision_config is None or isinstance(vision_config, dict):
            settings = {k: v for k, v in (vision_config or {}).items() if k != "model_type"}
            vision_config = CLIPVisionConfig(**{"patch_size": 16, **settings})
        self.text_config = text_config
        self.vision_config = vision_config

        if kwargs.get("id2label") is None and kwargs.get("num_labels") is None:
            kwargs["id2label"] = dict(enumerate(DEFAULT_LABELS))
        if kwargs.get("id2label") is not None:
            id2label = {int(k): v for k, v in kwargs["id2label"].items()}
            kwargs["id2label"] = id2label
            kwargs["label2id"] = {v: k for k, v in id2label.items()}

        self.projection_dim = projection_dim
        self.logit_scale_init_value = logit_scale_init_value
        self.num_views = num_views
        self.view_angles = [list(map(float, a)) for a in (DEFAULT_VIEW_ANGLES if view_angles is None else view_angles)]
        self.channels = list(channels)
        self.image_size = vision_config.image_size if image_size is None else image_size
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.patch_stem = patch_stem
        self.conv_stem_channels = None if conv_stem_channels is None else [int(c) for c in conv_stem_channels]
        self.use_view_embeddings = use_view_embeddings
        self.use_cvsa = use_cvsa
        self.cvsa_layers = cvsa_layers
        self.cvsa_heads = cvsa_heads
        self.cvsa_intermediate_size = 4 * projection_dim if cvsa_intermediate_size is None else cvsa_intermediate_size
        self.cvsa_use_patch_tokens = cvsa_use_patch_tokens
        self.cvsa_patch_grid = cvsa_patch_grid
        self.use_mtgf = use_mtgf
        self.mtgf_heads = mtgf_heads
        self.dropout = dropout
        self.num_frames = num_frames
        self.temporal_layers = temporal_layers
        self.frame_reference = frame_reference
        self.neutral_reference = neutral_reference
        self.neutral_difference_gain = float(neutral_difference_gain)
        self.consistency_weight = consistency_weight
        self.use_consistency_margin = use_consistency_margin
        self.consistency_margin = consistency_margin
        self.label_smoothing = label_smoothing
        self.prompt_templates = list(DEFAULT_PROMPT_TEMPLATES if prompt_templates is None else prompt_templates)
        descriptions = DEFAULT_CLASS_DESCRIPTIONS if class_descriptions is None else class_descriptions
        self.class_descriptions = {k: list(v) for k, v in descriptions.items()}
        self.label_prompts = None if label_prompts is None else {k: list(v) for k, v in label_prompts.items()}
        self.prompt_input_ids = prompt_input_ids
        self.center_text_embeds = center_text_embeds
        self.freeze_text_tower = freeze_text_tower
        self.class_head = class_head
        self.prompt_context_length = int(prompt_context_length)
        self.prompt_context_init = prompt_context_init
        self.prompt_context_class_specific = prompt_context_class_specific
        self.prompt_context_init_ids = None if prompt_context_init_ids is None else [int(t) for t in
                                                                                     prompt_context_init_ids]
        self.text_tower_lora = text_tower_lora
        self.starting_weights = None if starting_weights is None else dict(starting_weights)
        self.text_backend = text_backend
        self.pretrained_clip_name = pretrained_clip_name
        self.initializer_range = initializer_range
        super().__init__(**kwargs)

        labels = [self.id2label[i] for i in range(len(self.id2label))]
        needs_init_ids = self.prompt_context_init is not None and self.prompt_context_init_ids is None
        tokenizer = default_prompt_tokenizer() if self.prompt_input_ids is None or needs_init_ids else None
        if tokenizer is not None and needs_init_ids:
            self.prompt_context_init_ids = context_init_ids(tokenizer, self.prompt_context_init)
        if self.prompt_context_init_ids is not None and self.prompt_context_length == 0:
            self.prompt_context_length = len(self.prompt_context_init_ids)
        if self.label_prompts is None:
            self.label_prompts = {label: ensemble_prompts(label, self.class_prompt_templates, self.class_descriptions)
                                  for label in labels}
        if tokenizer is not None and self.prompt_input_ids is None:
            self.prompt_input_ids = self.tokenize_prompts(tokenizer)
        self._check()

    @property
    def class_prompt_templates(self) -> list[str]:
        """The templates that make a class's default prompts: `prompt_templates`, or the bare description
        (`CONTEXT_PROMPT_TEMPLATE`) when learned context tokens replace the template words."""
        return [CONTEXT_PROMPT_TEMPLATE] if self.prompt_context_length > 0 else list(self.prompt_templates)

    @property
    def uses_text(self) -> bool:
        """Whether the logits come from class text embeddings (`class_head="text"`)."""
        return self.class_head == "text"

    def tokenize_prompts(self, tokenizer: Any) -> list[list[list[int]]]:
        """Token ids of every prompt of every class, from a callable ``list[str] -> list[list[int]]`` or a
        transformers tokenizer (whose output has ``input_ids``)."""
        result = []
        for label in self.labels:
            encoded = tokenizer(list(self.label_prompts[label]))
            ids = encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded
            result.append([[int(t) for t in prompt] for prompt in ids])
        return result

    @property
    def labels(self) -> list[str]:
        """Class names in index order."""
        return [self.id2label[i] for i in range(len(self.id2label))]

    @property
    def neutral_input_names(self) -> tuple[str, ...]:
        """The inputs that come from the neutral scan (``neutral_`` + name); empty without a neutral reference."""
        return () if self.neutral_reference == "none" else ("pixel_values",)

    @property
    def num_channels(self) -> int:
        """Input channels C of `pixel_values` (sum of the channel-group widths)."""
        return sum(CHANNEL_GROUP_WIDTHS[group] for group in self.channels)

    def _check(self) -> None:
        """Raise `ValueError` naming the field when values are out of range or inconsistent."""

        def fail(message: str) -> None:
            raise ValueError(f"FacetVLMConfig: {message}")

        if sorted(self.id2label) != list(range(len(self.id2label))):
            fail(f"id2label keys must be 0..K-1, got {sorted(self.id2label)}")
        if len(self.id2label) < 2:
            fail(f"need at least 2 classes, got {self.labels}")
        if len(set(self.labels)) != len(self.labels):
            fail(f"id2label has duplicate class names: {self.labels}")
        missing = [label for label in self.labels if not self.label_prompts.get(label)]
        if missing:
            fail(f"label_prompts has no prompt for classes {missing}")
        for template in self.prompt_templates:
            if template.count("{}") != 1:
                fail(f"prompt template {template!r} must contain exactly one '{{}}'")
        if self.prompt_input_ids is not None:
            if len(self.prompt_input_ids) != len(self.labels):
                fail(f"prompt_input_ids has {len(self.prompt_input_ids)} classes, id2label has {len(self.labels)}")
            for label, ids in zip(self.labels, self.prompt_input_ids):
                expected = len(self.label_prompts[label])
                if len(ids) != expected or any(len(p) < 2 for p in ids):
                    fail(f"prompt_input_ids of class {label!r} do not match its {expected} prompts")
            largest = max(max(p) for ids in self.prompt_input_ids for p in ids)
            if largest >= self.text_config.vocab_size:
                fail(f"token id {largest} >= text_config.vocab_size {self.text_config.vocab_size}; keep CLIP's 49408")
            longest = max(len(p) for ids in self.prompt_input_ids for p in ids) + self.prompt_context_length
            if longest > self.text_config.max_position_embeddings:
                fail(f"a prompt has {longest} tokens (with {self.prompt_context_length} context tokens) > "
                     f"text_config.max_position_embeddings {self.text_config.max_position_embeddings}")
        if self.class_head not in CLASS_HEADS:
            fail(f"class_head must be one of {CLASS_HEADS}, got {self.class_head!r}")
        if self.prompt_context_length < 0:
            fail(f"prompt_context_length must be >= 0, got {self.prompt_context_length}")
        if self.prompt_context_init_ids is not None:
            if not self.prompt_context_init_ids:
                fail(f"prompt_context_init {self.prompt_context_init!r} has no tokens")
            if len(self.prompt_context_init_ids) != self.prompt_context_length:
                fail(f"prompt_context_init {self.prompt_context_init!r} has {len(self.prompt_context_init_ids)} "
                     f"tokens but prompt_context_length is {self.prompt_context_length}; set it to 0 or to that "
                     "number")
            if max(self.prompt_context_init_ids) >= self.text_config.vocab_size:
                fail("prompt_context_init_ids hold a token id >= text_config.vocab_size")
        elif self.prompt_context_init is not None:
            fail(f"prompt_context_init {self.prompt_context_init!r} needs a tokenizer (open_clip's vocabulary file) "
                 "or prompt_context_init_ids")
        if self.starting_weights is not None and not isinstance(self.starting_weights, dict):
            fail(f"starting_weights must be a dict, got {type(self.starting_weights).__name__}")
        unknown = [c for c in self.channels if c not in CHANNEL_GROUP_WIDTHS]
        if unknown or not self.channels or len(set(self.channels)) != len(self.channels):
            fail(f"channels {self.channels} must be distinct names from {sorted(CHANNEL_GROUP_WIDTHS)}")
        if self.num_views < 1:
            fail(f"num_views must be >= 1, got {self.num_views}")
        if len(self.view_angles) != self.num_views or any(len(a) != 2 for a in self.view_angles):
            fail(f"view_angles must hold num_views={self.num_views} (yaw, pitch) pairs, got {self.view_angles}")
        if self.image_size != self.vision_config.image_size:
            fail(f"image_size {self.image_size} differs from vision_config.image_size {self.vision_config.image_size}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            fail("image_mean and image_std must hold 3 values (RGB), std > 0")
        for name, heads in (("cvsa_heads", self.cvsa_heads), ("mtgf_heads", self.mtgf_heads)):
            if heads < 1 or self.projection_dim % heads:
                fail(f"projection_dim {self.projection_dim} must be a multiple of {name}={heads}")
        for name in ("cvsa_layers", "temporal_layers"):
            if getattr(self, name) < 0:
                fail(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.cvsa_patch_grid < 1:
            fail(f"cvsa_patch_grid must be >= 1, got {self.cvsa_patch_grid}")
        if self.num_frames < 1:
            fail(f"num_frames must be >= 1, got {self.num_frames}")
        if self.consistency_weight < 0 or self.consistency_margin < 0:
            fail("consistency_weight and consistency_margin must be >= 0")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            fail("dropout and label_smoothing must lie in [0, 1)")
        if self.frame_reference not in FRAME_REFERENCES:
            fail(f"frame_reference must be one of {FRAME_REFERENCES}, got {self.frame_reference!r}")
        if self.neutral_reference not in NEUTRAL_REFERENCES:
            fail(f"neutral_reference must be one of {NEUTRAL_REFERENCES}, got {self.neutral_reference!r}")
        if self.patch_stem not in PATCH_STEMS:
            fail(f"patch_stem must be one of {PATCH_STEMS}, got {self.patch_stem!r}")
        if self.patch_stem == "conv":
            patch = self.vision_config.patch_size
            halvings = patch.bit_length() - 1
            if patch < 2 or 2**halvings != patch:
                fail(f"patch_stem 'conv' needs a power-of-two vision_config.patch_size >= 2, got {patch}")
            if self.conv_stem_channels is not None and (
                len(self.conv_stem_channels) != halvings or min(self.conv_stem_channels) < 1
            ):
                fail(f"conv_stem_channels must hold {halvings} positive widths (one per halving of patch_size "
                     f"{patch}), got {self.conv_stem_channels}")
        if self.text_backend not in TEXT_BACKENDS:
            fail(f"text_backend must be one of {TEXT_BACKENDS}, got {self.text_backend!r}")


__all__ = ["FacetVLMConfig"]
