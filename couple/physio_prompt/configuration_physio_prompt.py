"""Configuration of subject-invariant physio-facial prompt tuning (face video + rPPG pulse -> valence/arousal)."""

from __future__ import annotations

from transformers import CLIPVisionConfig, PreTrainedConfig

_POOLINGS = ("attention", "mean")
_ADVERSARY_INPUTS = ("video_embeds", "shared_code")
_ADVERSARY_OBJECTIVES = ("reversal", "confusion")
_INVARIANCE_INPUTS = ("shared_code", "video_embeds")
_SHARED_ADAPTER_INPUTS = ("tokens", "temporal_deviation")
PULSE_REFERENCES = ("none", "person_mean")


class PhysioPromptConfig(PreTrainedConfig):
    r"""Configuration of [`PhysioPromptForEmotionRecognition`].

    A frozen CLIP ViT (``vision_config``) reads ``T`` face frames; a small CNN turns the pulse time-frequency map
    into ``num_prompts`` prompt tokens for every ViT layer; a shared bottleneck adapter per layer (kept at test time)
    and per-subject adapters (training only) adapt the residual stream; heads predict valence and arousal (high/low)
    and, optionally, a discrete emotion.

    Args:
        vision_config (`dict` or `CLIPVisionConfig`, *optional*): the ViT; defaults to CLIP ViT-B/16.
        num_prompts (`int`, defaults to 4): prompt tokens per layer (deep prompt tuning).
        tfr_channels (`int`, defaults to 1): channels of ``tfr_values`` (1 map; more for several pulse sources).
        pulse_hidden_size (`int`, defaults to 128): width of the pulse embedding the prompt generator computes.
        pulse_conv_channels (`int`, defaults to 16): channels of the first TFR convolution (doubled in the second).
        prompt_init_std (`float`, defaults to 0.02): std of the learned base prompts.
        adapter_bottleneck (`int`, defaults to 64): bottleneck width of every adapter.
        num_train_subjects (`int`, defaults to 0): number of training subjects = subject-specific adapters and
            classes of the subject adversary; 0 disables both (plain shared adapters).
        specific_adapter_dropout (`float`, defaults to 0.5): probability, per training sample, of leaving the
            subject-specific adapters out, so that the heads also learn the test-time (shared-only) path.
        orthogonality_weight (`float`, defaults to 0.1): weight of the shared/specific orthogonality loss.
        adversarial_weight (`float`, defaults to 0.1): weight of the subject-adversarial cross-entropy.
        gradient_reversal_scale (`float`, defaults to 1.0): gradient-reversal factor in front of the adversary.
        adversary_input (`str`, defaults to "video_embeds"): what the subject adversary reads. ``"video_embeds"``:
            the time-pooled CLS embedding of the training samples whose subject-specific adapters were dropped
            (`specific_adapter_dropout`), i.e. exactly the test-time features the heads and an identity probe see,
            so the gradient reversal asks the shared adapters, prompts and pooling to take identity out of them
            (the frozen ViT's own output included: an adapter adds to the residual stream and can cancel a
            direction); no adversarial term on a batch where every sample kept its specific adapters.
            ``"shared_code"``: the shared adapters' contribution averaged over tokens, layers and frames, for every
            sample (the abstract leaves the adversary's input open; this earlier choice left the features' identity
            untouched, see docs/physio.md).
        adversary_objective (`str`, defaults to "reversal"): how the features are pushed against the adversary.
            ``"reversal"``: gradient reversal (Ganin & Lempitsky, 2015) of the adversary's cross-entropy, scaled by
            `gradient_reversal_scale`: the features are asked to make the adversary wrong, which they can do by
            encoding identity differently rather than less (the identity probe of docs/physio.md finds more
            identity in the shared code with it than without). ``"confusion"``: the adversary learns its
            cross-entropy on detached features, and the features are trained, through the adversary with its
            weights held fixed, to make its prediction uniform over the training subjects (the cross-entropy
            against the uniform distribution; the "confusion" loss of Tzeng et al., 2015, used for removing a
            nuisance attribute by Alvi et al., 2018): the features are asked to make identity unreadable.
        invariance_weight (`float`, defaults to 0.0): weight of subject-mean matching, an invariance term without an
            adversary (0 = off; needs `num_train_subjects` > 0). It asks that, within each combination of the
            valence/arousal labels, every training subject's mean of the features (`invariance_input`) equal the
            mean over subjects: the loss is the between-subject scatter of those per-subject means over the running
            scatter of the features around their label group's mean (a ratio: its gradient moves each subject's
            mean towards the others', rather than shrinking the features). Batches hold about one clip
            per subject, so the per-subject means live in a memory (running means of past batches, not saved),
            into which the batch's clips enter with gradient. Why: a linear identity probe separates people by
            their mean features; an adversary can be fooled while those means still differ (docs/physio.md). The
            abstract does not name the invariance losses; this one is the library's option.
        invariance_input (`str`, defaults to "shared_code"): what subject-mean matching reads: ``"shared_code"``
            (every sample) or ``"video_embeds"`` (the shared-only samples, as the adversary's default).
        invariance_momentum (`float`, defaults to 0.1): update rate of the per-subject means in the memory once a
            cell has seen ``1 / invariance_momentum`` clips (a running average before that); also the rate of the
            memory behind `identity_nullspace_rank`.
        identity_nullspace_rank (`int`, defaults to 0): with ``k`` > 0 (and `num_train_subjects` > 0) every shared
            adapter's output is projected off the ``k`` leading directions in which the training subjects' mean
            outputs differ, within each combination of the valence/arousal labels: a linear identity guard on what
            the shared path writes into the stream, in the spirit of iterative nullspace projection (Ravfogel et
            al., "Null It Out", ACL 2020), but with one projection per layer estimated during training instead of
            iterated probes. Per layer, a memory holds each (subject, label group) cell's running mean of the
            adapter's raw output (averaged over tokens and frames; not saved); at every training step the
            directions are the top-``k`` right singular vectors of the cells' deviations from their group's mean
            over subjects, and the projection uses them at once. The last training step's directions are a saved
            buffer (``identity_basis``), used unchanged at test time. Why: an adversary or a loss on the features
            can be met by encoding identity differently; a projection cannot write into the directions it removes
            (docs/physio.md). The abstract does not name this; it is the library's option, off by default.
        shared_adapter_input (`str`, defaults to "tokens"): what the shared adapters read. ``"tokens"``: each
            frame's tokens as the layer left them (``shared(h)``). ``"temporal_deviation"``: each token's deviation
            from its mean over the clip's frames, ``shared(h_t - mean_t h)`` (the update still adds to ``h``): the
            shared path sees only what changes within the clip (expression, motion, the prompts' frame-dependent
            effect), not what a person looks like throughout it (face shape, skin tone, hair, background, lighting),
            while the subject-specific adapters read the tokens themselves. The decoupling is then in what each
            path reads rather than in a loss: the identity probe of docs/physio.md finds every loss-based term
            leaves the shared code as identity-rich as the tokens it reads. Related in spirit to the normalised
            frame differences of DeepPhys (Chen & McDuff, ECCV 2018), which remove stationary skin appearance
            from rPPG input. A clip whose frames are all the same gives every person the same shared code. Not in
            the abstract: the library's option.
        temporal_pooling (`str`, defaults to "attention"): ``"attention"`` (learned attention over frames) or
            ``"mean"``.
        use_pulse_embedding (`bool`, defaults to True): also feed the pulse embedding (the prompt generator's
            encoding of the TFR) to the heads, a pulse-to-head shortcut beside the prompts; off, the pulse reaches the
            output through the prompt tokens alone. Forced off when `use_pulse_prompts` is off.
        use_pulse_prompts (`bool`, defaults to True): insert the pulse-conditioned prompt tokens into every ViT layer;
            off (the "without pulse prompts" ablation), no prompt token is inserted, `use_pulse_embedding` is set to
            False and the model reads no pulse at all: its output does not depend on ``tfr_values``.
        pulse_reference (`str`, defaults to "none"): what the pulse map is read against. ``"none"``: each clip's
            map as measured. ``"person_mean"``: each clip's map minus the mean map of the same person's clips, so the
            prompts see the heart rate and its variability relative to that person's own level (people differ in
            resting heart rate by more than an emotion moves it). The reference needs several unlabelled clips of
            the person, not all of one emotion: in training, all of a person's clips in the data set (labels unused;
            a person is never in both the training and the test side of a subject-independent fold); at prediction
            time, the person's calibration clips (`PhysioPromptProcessor.pulse_reference`; the pipeline and
            ``predict.py --pulse_reference`` take them, and refuse to predict without them). Not in the abstract:
            the library's option, off by default; on the generated small config it lifts unseen people from 89.8
            to 96.1 % (``docs/physio.md``).
        use_subject_adapters (`bool`, defaults to True): build the subject-specific adapters and the subject
            adversary when `num_train_subjects` > 0; off (the "without decoupled adapters" ablation),
            `num_train_subjects` is set to 0, whatever the training run passes, leaving the shared adapters only.
        num_emotions (`int`, defaults to 0): classes of the discrete-emotion head; 0 disables it.
        emotion_labels (`list[str]`, *optional*): names of the emotion classes (``id2label`` of that head).
        emotion_loss_weight (`float`, defaults to 1.0): weight of the emotion cross-entropy.
        rating_threshold (`float`, defaults to 5.0): ratings strictly above it are "high" (1..9 scales).
        head_dropout (`float`, defaults to 0.1): dropout before the heads.
        image_mean, image_std (`tuple[float]`): per-channel normalisation of ``pixel_values`` in [0, 1] (CLIP's).
        freeze_vision (`bool`, defaults to True): keep the ViT frozen.
        vit_lora_rank (`int`, defaults to 0): rank of an optional LoRA on the ViT's q/v projections when trained
            through PEFT (``peft_config_kwargs``); 0 = none, the ViT stays exactly as loaded.

    Example:

    ```python
    >>> from transformers import CLIPVisionConfig
    >>> from couple import PhysioPromptConfig, PhysioPromptForEmotionRecognition
    >>> vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                           num_attention_heads=4, image_size=32, patch_size=8)
    >>> model = PhysioPromptForEmotionRecognition(PhysioPromptConfig(vision_config=vision, num_train_subjects=4))
    ```
    """

    model_type = "physio_prompt"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig}

    vision_config: dict | CLIPVisionConfig | None = None
    num_prompts: int = 4
    tfr_channels: int = 1
    pulse_hidden_size: int = 128
    pulse_conv_channels: int = 16
    prompt_init_std: float = 0.02
    adapter_bottleneck: int = 64
    num_train_subjects: int = 0
    specific_adapter_dropout: float = 0.5
    orthogonality_weight: float = 0.1
    adversarial_weight: float = 0.1
    gradient_reversal_scale: float = 1.0
    adversary_input: str = "video_embeds"
    adversary_objective: str = "reversal"
    invariance_weight: float = 0.0
    invariance_input: str = "shared_code"
    invariance_momentum: float = 0.1
    identity_nullspace_rank: int = 0
    shared_adapter_input: str = "tokens"
    temporal_pooling: str = "attention"
    use_pulse_embedding: bool = True
    use_pulse_prompts: bool = True
    use_subject_adapters: bool = True
    pulse_reference: str = "none"
    num_emotions: int = 0
    emotion_labels: list[str] | None = None
    emotion_loss_weight: float = 1.0
    rating_threshold: float = 5.0
    head_dropout: float = 0.1
    image_mean: tuple[float, ...] | list[float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, ...] | list[float] = (0.26862954, 0.26130258, 0.27577711)
    freeze_vision: bool = True
    vit_lora_rank: int = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not self.use_subject_adapters:
            self.num_train_subjects = 0
        if not self.use_pulse_prompts:
            self.use_pulse_embedding = False
        if self.adversary_input not in _ADVERSARY_INPUTS:
            raise ValueError(f"adversary_input must be one of {_ADVERSARY_INPUTS}, got {self.adversary_input!r}")
        if self.adversary_objective not in _ADVERSARY_OBJECTIVES:
            raise ValueError(f"adversary_objective must be one of {_ADVERSARY_OBJECTIVES}, got "
                             f"{self.adversary_objective!r}")
        if self.invariance_input not in _INVARIANCE_INPUTS:
            raise ValueError(f"invariance_input must be one of {_INVARIANCE_INPUTS}, got {self.invariance_input!r}")
        if self.invariance_weight < 0:
            raise ValueError(f"invariance_weight must be >= 0, got {self.invariance_weight}")
        if not 0.0 < self.invariance_momentum <= 1.0:
            raise ValueError(f"invariance_momentum must be in (0, 1], got {self.invariance_momentum}")
        if self.identity_nullspace_rank > self.vision_config.hidden_size:
            raise ValueError(f"identity_nullspace_rank={self.identity_nullspace_rank} exceeds the ViT's hidden size "
                             f"{self.vision_config.hidden_size}")
        if self.shared_adapter_input not in _SHARED_ADAPTER_INPUTS:
            raise ValueError(f"shared_adapter_input must be one of {_SHARED_ADAPTER_INPUTS}, got "
                             f"{self.shared_adapter_input!r}")
        if self.pulse_reference not in PULSE_REFERENCES:
            raise ValueError(f"pulse_reference must be one of {PULSE_REFERENCES}, got {self.pulse_reference!r}")
        if self.temporal_pooling not in _POOLINGS:
            raise ValueError(f"temporal_pooling must be one of {_POOLINGS}, got {self.temporal_pooling!r}")
        for name in ("num_prompts", "tfr_channels", "pulse_hidden_size", "pulse_conv_channels", "adapter_bottleneck"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("num_train_subjects", "num_emotions", "vit_lora_rank", "identity_nullspace_rank"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.specific_adapter_dropout < 1.0:
            raise ValueError(f"specific_adapter_dropout must be in [0, 1), got {self.specific_adapter_dropout}")
        if self.emotion_labels is not None and len(self.emotion_labels) != self.num_emotions:
            raise ValueError(f"emotion_labels has {len(self.emotion_labels)} names for num_emotions="
                             f"{self.num_emotions}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std need 3 values (RGB)")


__all__ = ["PhysioPromptConfig"]
