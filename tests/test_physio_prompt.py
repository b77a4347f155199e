"""The physio-facial prompt-tuning model: shapes, training, frozen ViT, subject adapters, PEFT and remote code."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, CLIPVisionModel

from couple.physio_prompt.configuration_physio_prompt import PhysioPromptConfig
from couple.physio_prompt.modeling_physio_prompt import PhysioPromptForEmotionRecognition, ratings_to_labels
from facet_vlm.physio import lora_config

TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "image_size": 32, "patch_size": 8}


def tiny_config(**overrides) -> PhysioPromptConfig:
    settings = {"vision_config": CLIPVisionConfig(**TINY_VISION), "num_prompts": 2, "pulse_hidden_size": 16,
                "pulse_conv_channels": 4, "adapter_bottleneck": 8, "num_train_subjects": 3, "num_emotions": 5,
                "specific_adapter_dropout": 0.0, "head_dropout": 0.0}
    return PhysioPromptConfig(**{**settings, **overrides})


def tiny_model(seed: int = 0, **overrides) -> PhysioPromptForEmotionRecognition:
    torch.manual_seed(seed)
    return PhysioPromptForEmotionRecognition(tiny_config(**overrides))


def batch(seed: int = 1, size: int = 4, frames: int = 3):
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.rand(size, frames, 3, 32, 32, generator=generator),
        "tfr_values": torch.randn(size, 1, 16, 12, generator=generator),
        "subject_ids": torch.arange(size) % 3,
        "labels": torch.stack([torch.arange(size) % 2, (torch.arange(size) // 2) % 2, torch.arange(size) % 5], 1),
    }


def train_steps(model, inputs, steps: int = 8, lr: float = 1e-2) -> list[float]:
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_output_shapes_and_logits_convention():
    model = tiny_model().eval()
    inputs = batch()
    with torch.no_grad():
        output = model(inputs["pixel_values"], inputs["tfr_values"], labels=inputs["labels"])
    assert output.logits.shape == (4, 2 + 2 + 5)
    assert output.valence_logits.shape == output.arousal_logits.shape == (4, 2)
    assert output.emotion_logits.shape == (4, 5)
    torch.testing.assert_close(output.logits, torch.cat([output.valence_logits, output.arousal_logits,
                                                         output.emotion_logits], dim=-1))
    expected = output.loss_valence + output.loss_arousal + output.loss_emotion
    torch.testing.assert_close(output.loss, expected)
    assert output.loss_orthogonality is None and output.loss_adversarial is None
    # Frames of another size are resized to the ViT's input.
    with torch.no_grad():
        resized = model(torch.rand(1, 2, 3, 48, 40), torch.randn(1, 1, 8, 8))
    assert resized.logits.shape == (1, 9)


def test_training_lowers_the_loss_and_leaves_the_vit_untouched():
    model = tiny_model(adversary_input="shared_code")  # an adversarial term on every batch
    frozen = {name: value.clone() for name, value in model.vision_model.state_dict().items()}
    assert not any(p.requires_grad for p in model.vision_model.parameters())
    inputs = batch()
    losses = train_steps(model, inputs, steps=10)
    assert losses[-1] < 0.7 * losses[0]
    for name, value in model.vision_model.state_dict().items():
        assert torch.equal(value, frozen[name]), f"ViT weight {name} changed"
    output = model(**inputs)
    assert output.loss_orthogonality is not None and output.loss_adversarial is not None
    assert output.subject_logits.shape == (4, 3)


def test_subject_adapters_only_in_training():
    model = tiny_model()
    inputs = batch()
    train_steps(model, inputs, steps=3)
    pixel_values, tfr_values = inputs["pixel_values"], inputs["tfr_values"]
    other_subjects = (inputs["subject_ids"] + 1) % 3
    model.eval()
    with torch.no_grad():
        plain = model(pixel_values, tfr_values).logits
        given = model(pixel_values, tfr_values, subject_ids=inputs["subject_ids"]).logits
        other = model(pixel_values, tfr_values, subject_ids=other_subjects).logits
    torch.testing.assert_close(given, plain, rtol=0, atol=0)
    torch.testing.assert_close(other, plain, rtol=0, atol=0)
    model.train()  # no dropout anywhere in this config: differences come from the specific adapters alone
    with torch.no_grad():
        train_plain = model(pixel_values, tfr_values).logits
        train_given = model(pixel_values, tfr_values, subject_ids=inputs["subject_ids"]).logits
        train_other = model(pixel_values, tfr_values, subject_ids=other_subjects).logits
    torch.testing.assert_close(train_plain, plain)
    assert not torch.allclose(train_given, train_plain)
    assert not torch.allclose(train_given, train_other)


@pytest.mark.parametrize("adversary_input", ["shared_code", "video_embeds"])
def test_gradient_reversal_pushes_the_shared_adapters_against_the_adversary(adversary_input):
    # "video_embeds" reads the shared-only samples: drop the specific adapters of (almost) every sample.
    dropout = 0.0 if adversary_input == "shared_code" else 0.999
    model = tiny_model(adversarial_weight=1.0, orthogonality_weight=0.0, adversary_input=adversary_input,
                       specific_adapter_dropout=dropout)
    inputs = batch()
    train_steps(model, inputs, steps=2)

    def adversarial_backward():
        model.zero_grad()
        torch.manual_seed(5)  # the same specific-adapter draws in both passes
        model(**inputs).loss_adversarial.backward()

    adversarial_backward()
    classifier_grad = model.subject_classifier.mlp[-1].weight.grad
    shared_grad = model.adapter_layers[-1].shared_adapter.up_proj.weight.grad
    pooling_grads = [p.grad for p in model.temporal_pooling.parameters() if p.grad is not None]
    assert classifier_grad is not None and classifier_grad.abs().sum() > 0
    assert shared_grad is not None and shared_grad.abs().sum() > 0
    # Only the features the heads read carry the adversary's gradient into the temporal pooling.
    pooled = any(grad.abs().sum() > 0 for grad in pooling_grads)
    assert pooled == (adversary_input == "video_embeds")
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.heads.parameters())
    # Reversing the reversal flips the shared path's gradient sign exactly.
    model.subject_classifier.scale = -1.0
    adversarial_backward()
    torch.testing.assert_close(model.adapter_layers[-1].shared_adapter.up_proj.weight.grad, -shared_grad)


def test_confusion_objective_trains_the_adversary_on_detached_features_and_the_features_towards_uniform():
    """``adversary_objective="confusion"``: the adversary's weights get exactly the gradient of its own
    cross-entropy on detached features; the features get the gradient of the confusion loss alone, which is
    log(subjects) and flat when the adversary's prediction is uniform."""
    model = tiny_model(adversarial_weight=1.0, orthogonality_weight=0.0, adversary_input="shared_code",
                       adversary_objective="confusion")
    inputs = batch()
    train_steps(model, inputs, steps=2)
    shared = model.adapter_layers[-1].shared_adapter.up_proj.weight
    last = model.subject_classifier.mlp[-1]

    model.zero_grad()
    torch.manual_seed(5)
    model(**inputs).loss_adversarial.backward()
    classifier_grad, shared_grad = last.weight.grad.clone(), shared.grad.clone()
    model.zero_grad()
    torch.manual_seed(5)
    code = model(**inputs).shared_code
    torch.nn.functional.cross_entropy(model.subject_classifier.mlp(code.detach()), inputs["subject_ids"]).backward()
    torch.testing.assert_close(last.weight.grad, classifier_grad)
    assert shared.grad is None or shared.grad.abs().sum() == 0  # detached: the adversary's own term
    assert shared_grad.abs().sum() > 0  # the confusion term reaches the shared adapters

    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    model.zero_grad()
    output = model(**inputs)
    _, _, confusion = model.subject_classifier.confusion_terms(output.shared_code, inputs["subject_ids"])
    torch.testing.assert_close(confusion, torch.tensor(3.0).log())
    output.loss_adversarial.backward()
    assert shared.grad is None or shared.grad.abs().max() < 1e-7
    with pytest.raises(ValueError, match="adversary_objective"):
        tiny_config(adversary_objective="minimax")


def test_feature_adversary_reads_only_the_test_time_path():
    """With ``adversary_input="video_embeds"`` the adversary sees only samples whose specific adapters were dropped:
    none when every sample keeps them, and its loss is the subject cross-entropy of exactly the dropped ones."""
    inputs = batch(size=6)
    inputs["subject_ids"] = torch.arange(6) % 3
    model = tiny_model(adversary_input="video_embeds", specific_adapter_dropout=0.0).train()
    output = model(**inputs)
    assert output.loss_adversarial is None and output.loss is not None
    model = tiny_model(adversary_input="video_embeds", specific_adapter_dropout=0.5).train()
    torch.manual_seed(1)
    dropped = torch.rand(6) < 0.5  # the draw the forward pass makes first with this seed
    assert 0 < dropped.sum() < 6
    torch.manual_seed(1)
    output = model(**inputs)
    logits = model.subject_classifier.mlp(output.video_embeds)
    torch.testing.assert_close(output.loss_adversarial,
                               torch.nn.functional.cross_entropy(logits[dropped], inputs["subject_ids"][dropped]))
    with pytest.raises(ValueError, match="adversary_input"):
        tiny_config(adversary_input="features")


def test_shared_code_is_what_the_shared_adapters_add():
    """The classification output carries the shared adapters' contribution (what the identity probe reads): zero
    for an untrained model (the adapters start at zero), the backbone's own value after training, and at test time
    independent of the subject ids."""
    from couple.physio_prompt.modeling_physio_prompt import PhysioPromptModel

    model = tiny_model().eval()
    inputs = batch()
    with torch.no_grad():
        untrained = model(inputs["pixel_values"], inputs["tfr_values"])
    assert untrained.shared_code.shape == (4, TINY_VISION["hidden_size"])
    assert torch.count_nonzero(untrained.shared_code) == 0
    train_steps(model, inputs, steps=3)
    model.eval()
    with torch.no_grad():
        trained = model(inputs["pixel_values"], inputs["tfr_values"], subject_ids=inputs["subject_ids"])
        backbone = PhysioPromptModel.forward(model, inputs["pixel_values"], inputs["tfr_values"])
        for layer in model.adapter_layers:
            layer.shared_adapter.up_proj.weight.zero_()
            layer.shared_adapter.up_proj.bias.zero_()
        silenced = model(inputs["pixel_values"], inputs["tfr_values"])
    assert torch.count_nonzero(trained.shared_code) > 0
    torch.testing.assert_close(trained.shared_code, backbone.shared_code, rtol=0, atol=0)
    assert torch.count_nonzero(silenced.shared_code) == 0


def test_shared_adapters_on_within_clip_change_give_every_still_clip_the_same_code():
    """``shared_adapter_input="temporal_deviation"``: a clip whose frames are all the same has no within-clip
    change, so the shared code is the same whatever the face (and pulse) in it, while the default shared adapters
    (reading the tokens) give different people different codes; a clip that moves gets its own code; one frame per
    clip is refused."""
    inputs = batch()
    still = inputs["pixel_values"][:, :1].expand(-1, 3, -1, -1, -1).contiguous()
    codes = {}
    for mode in ("tokens", "temporal_deviation"):
        model = tiny_model(shared_adapter_input=mode)
        train_steps(model, inputs, steps=3)
        model.eval()
        with torch.no_grad():
            codes[mode] = (model(still, inputs["tfr_values"]).shared_code,
                           model(inputs["pixel_values"], inputs["tfr_values"]).shared_code)
    still_codes, moving_codes = codes["temporal_deviation"]
    assert torch.count_nonzero(moving_codes) > 0
    torch.testing.assert_close(still_codes, still_codes[:1].expand_as(still_codes), rtol=0, atol=1e-6)
    assert (moving_codes - still_codes).abs().amax(dim=1).min() > 1e-4
    assert (codes["tokens"][0] - codes["tokens"][0][:1]).abs().amax() > 1e-4
    with pytest.raises(ValueError, match="at least 2 frames"):
        model(inputs["pixel_values"][:, :1], inputs["tfr_values"])
    with pytest.raises(ValueError, match="shared_adapter_input"):
        tiny_config(shared_adapter_input="frames")


def test_invalid_subject_ids_and_config_values_raise():
    model = tiny_model().train()
    inputs = batch()
    with pytest.raises(ValueError, match="subject_ids"):
        model(inputs["pixel_values"], inputs["tfr_values"], subject_ids=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="temporal_pooling"):
        tiny_config(temporal_pooling="max")
    with pytest.raises(ValueError, match="emotion_labels"):
        tiny_config(num_emotions=2, emotion_labels=["a"])


def test_time_frequency_map_acts_through_the_prompts_alone():
    """With the pulse-to-head shortcut off (`use_pulse_embedding=False`) the TFR reaches the output only through the
    prompt tokens: once the prompt projection has learned, a different TFR changes the logits; with the projection
    zeroed (prompts that no longer depend on the TFR) it changes nothing."""
    model = tiny_model(use_pulse_embedding=False, num_train_subjects=0)
    assert model.heads.valence.in_features == TINY_VISION["hidden_size"]
    inputs = batch()
    other_tfr = torch.randn(inputs["tfr_values"].shape, generator=torch.Generator().manual_seed(7))

    def logits_for(tfr_values):
        model.eval()
        with torch.no_grad():
            return model(inputs["pixel_values"], tfr_values).logits

    torch.testing.assert_close(logits_for(other_tfr), logits_for(inputs["tfr_values"]))  # zero-initialised offsets
    train_steps(model, {key: inputs[key] for key in ("pixel_values", "tfr_values", "labels")}, steps=3)
    assert model.prompt_generator.prompt_proj.weight.abs().sum() > 0
    assert not torch.allclose(logits_for(other_tfr), logits_for(inputs["tfr_values"]), atol=1e-5)
    with torch.no_grad():
        model.prompt_generator.prompt_proj.weight.zero_()
        model.prompt_generator.prompt_proj.bias.zero_()
    torch.testing.assert_close(logits_for(other_tfr), logits_for(inputs["tfr_values"]))


def test_ratings_to_labels_threshold():
    labels = ratings_to_labels(torch.tensor([1.0, 5.0, 5.5, 9.0]), torch.tensor([9.0, 6.0, 5.0, 2.0]))
    assert labels.tolist() == [[0, 1], [0, 1], [1, 0], [1, 0]]


def test_mean_pooling_and_no_subjects_config():
    model = tiny_model(temporal_pooling="mean", num_train_subjects=0, num_emotions=0, use_pulse_embedding=False)
    inputs = batch()
    output = model(inputs["pixel_values"], inputs["tfr_values"], subject_ids=inputs["subject_ids"],
                   labels=inputs["labels"][:, :2])
    assert output.logits.shape == (4, 4) and output.loss_adversarial is None and output.loss_orthogonality is None


def test_from_clip_loads_local_vision_weights(tmp_path):
    torch.manual_seed(5)
    clip = CLIPVisionModel(CLIPVisionConfig(**TINY_VISION))
    clip.save_pretrained(tmp_path / "clip")
    model = PhysioPromptForEmotionRecognition.from_clip(str(tmp_path / "clip"), num_prompts=2, adapter_bottleneck=8)
    for name, value in clip.state_dict().items():
        torch.testing.assert_close(model.vision_model.state_dict()[name], value, rtol=0, atol=0)
    assert model.config.vision_config.hidden_size == TINY_VISION["hidden_size"]


def test_peft_saves_only_trained_parts_and_round_trips(tmp_path):
    from peft import PeftModel, get_peft_model

    base = tiny_model()
    base.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(base, lora_config(base))
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and not any("vision_model" in name for name in trainable)
    inputs = batch()
    train_steps(peft_model, inputs, steps=3)
    peft_model.save_pretrained(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert not any("vision_model" in key for key in saved)
    assert any("shared_adapter" in key for key in saved) and any("prompt_generator" in key for key in saved)
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(pixel_values=inputs["pixel_values"], tfr_values=inputs["tfr_values"]).logits

    restored_base = PhysioPromptForEmotionRecognition.from_pretrained(tmp_path / "base")
    restored = PeftModel.from_pretrained(restored_base, tmp_path / "adapter").eval()
    with torch.no_grad():
        logits = restored(pixel_values=inputs["pixel_values"], tfr_values=inputs["tfr_values"]).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert "shared_adapter" in config["modules_to_save"]


def test_peft_vit_lora_keeps_base_weights(tmp_path):
    from peft import get_peft_model

    base = tiny_model(vit_lora_rank=2)
    frozen = {name: value.clone() for name, value in base.vision_model.state_dict().items()}
    peft_model = get_peft_model(base, lora_config(base))
    lora = [name for name, p in peft_model.named_parameters() if p.requires_grad and "lora_" in name]
    assert lora and all(("q_proj" in name or "v_proj" in name) for name in lora)
    train_steps(peft_model, batch(), steps=2)
    for name, value in peft_model.base_model.model.vision_model.state_dict().items():
        original = name.replace(".base_layer", "")
        if "lora_" not in name:
            torch.testing.assert_close(value, frozen[original], rtol=0, atol=0)


def test_without_pulse_prompts_the_model_reads_no_pulse():
    """The "without pulse prompts" arm has no other path for the pulse: the shortcut to the heads is forced off, and
    any TFR (even after training moved every weight) gives identical logits."""
    model = tiny_model(use_pulse_prompts=False, use_pulse_embedding=True, num_train_subjects=0)
    assert model.config.use_pulse_embedding is False
    assert model.heads.valence.in_features == TINY_VISION["hidden_size"]
    inputs = batch()
    train_steps(model, {key: inputs[key] for key in ("pixel_values", "tfr_values", "labels")}, steps=3)
    other_tfr = 3 * torch.randn(inputs["tfr_values"].shape, generator=torch.Generator().manual_seed(9))
    model.eval()
    with torch.no_grad():
        first = model(inputs["pixel_values"], inputs["tfr_values"])
        second = model(inputs["pixel_values"], other_tfr)
    torch.testing.assert_close(first.logits, second.logits, rtol=0, atol=0)
    assert first.pulse_embeds is None


def test_pulse_embedding_shortcut_follows_the_prompts():
    assert tiny_model().heads.valence.in_features == TINY_VISION["hidden_size"] + 16  # pulse_hidden_size
    assert PhysioPromptConfig(use_pulse_prompts=False).use_pulse_embedding is False


def test_subject_mean_matching_is_the_share_of_spread_that_identity_explains():
    """First batch (empty memory): the loss is the mean squared distance of the (subject, group) cell means from
    their group's centre over the features' mean squared distance from it; identical subject means give 0."""
    from couple.physio_prompt.modeling_physio_prompt import SubjectMeanMatching

    matching = SubjectMeanMatching(tiny_config(invariance_weight=1.0))
    generator = torch.Generator().manual_seed(0)
    centres, offsets = torch.randn(2, 32, generator=generator), torch.randn(3, 32, generator=generator)
    offsets -= offsets.mean(0)  # the centre of a group = the mean over subjects
    within = torch.randn(3, 2, 32, generator=generator)
    subjects = torch.tensor([s for s in range(3) for _ in range(2) for _ in range(2)])
    groups = torch.tensor([g for _ in range(3) for g in range(2) for _ in range(2)])
    noise = torch.stack([w for s in range(3) for _ in range(2) for w in (within[s, 0], -within[s, 0])])

    same = centres[groups] + noise  # every cell's mean is its group's centre
    assert SubjectMeanMatching(tiny_config(invariance_weight=1.0))(same, subjects, groups).item() < 1e-10
    features = centres[groups] + offsets[subjects] + noise
    expected = offsets.pow(2).sum(-1).mean() / (offsets[subjects] + noise).pow(2).sum(-1).mean()
    torch.testing.assert_close(matching(features, subjects, groups), expected)
    assert matching.counts.view(3, 9)[:, :2].eq(2).all() and matching.counts.sum() == 12


def test_subject_mean_matching_remembers_other_subjects_and_pulls_towards_their_centre():
    """A batch of one subject is compared with the others' remembered means: a batch at the group's centre over
    subjects costs less than one far from it, and the gradient moves the far batch towards the others."""
    import copy

    from couple.physio_prompt.modeling_physio_prompt import SubjectMeanMatching

    matching = SubjectMeanMatching(tiny_config(invariance_weight=1.0, invariance_momentum=0.5))
    points = torch.zeros(3, 32)
    points[:, 0] = torch.tensor([-1.0, 1.0, 6.0])
    matching(points, torch.arange(3), torch.zeros(3, dtype=torch.long))  # memory: subjects at -1, 1, 6

    def clips(at: float) -> torch.Tensor:
        values = torch.zeros(2, 32)
        values[:, 0], values[:, 1] = at, torch.tensor([1.0, -1.0])
        return values

    subject, group = torch.tensor([2, 2]), torch.zeros(2, dtype=torch.long)
    near = copy.deepcopy(matching)(clips(0.0), subject, group)
    far_features = clips(6.0).requires_grad_()
    far = copy.deepcopy(matching)(far_features, subject, group)
    assert 0 < near.item() < far.item()
    far.backward()
    assert (far_features.grad[:, 0] > 0).all()  # descent moves subject 2 down, towards the others
    matching(clips(2.0), subject, group)  # a running average while the cell has few clips: (6 + 2 + 2) / 3
    torch.testing.assert_close(matching.means.view(3, 9, 32)[2, 0, 0], torch.tensor(10.0 / 3))
    assert matching.counts.view(3, 9)[2, 0] == 3


def test_invariance_term_joins_the_training_loss_only():
    """``invariance_weight`` adds weight x loss_invariance to the training loss (a ratio in [0, 1]); evaluation
    has no term; the memory is not saved, and a reloaded model starts with an empty one."""
    torch.manual_seed(0)
    model = tiny_model(invariance_weight=2.0, orthogonality_weight=0.0, adversarial_weight=0.0)
    inputs = batch(size=6)
    train_steps(model, inputs, steps=2)  # the shared adapters start at zero (zero-initialised up projection)
    model.subject_mean_matching.counts.zero_()  # an empty memory again: a ratio within this batch, in [0, 1]
    model.subject_mean_matching.spread.zero_()
    torch.manual_seed(3)
    output = model(**inputs)
    assert 0 < output.loss_invariance.item() <= 1
    parts = output.loss_valence + output.loss_arousal + output.loss_emotion
    torch.testing.assert_close(output.loss, parts + 2.0 * output.loss_invariance)
    assert model.subject_mean_matching.counts.sum() == 6
    model.eval()
    assert model(**inputs).loss_invariance is None
    assert "subject_mean_matching.means" not in model.state_dict()
    assert tiny_model().subject_mean_matching is None
    with pytest.raises(ValueError, match="invariance_input"):
        tiny_config(invariance_input="pixels")


def test_identity_projection_takes_out_the_directions_where_subject_means_differ():
    """``identity_nullspace_rank``: in training the shared adapter's output is projected off the directions in which
    the subjects' mean outputs differ within a label group; a direction that only follows the label is kept, and a
    direction without any between-subject spread is not used (its column stays zero)."""
    from couple.physio_prompt.modeling_physio_prompt import SharedAdapter

    adapter = SharedAdapter(tiny_config(identity_nullspace_rank=2)).train()
    with torch.no_grad():  # on positive inputs of size ~10 the adapter passes the first 8 coordinates through
        for linear in (adapter.down_proj, adapter.up_proj):
            linear.weight.zero_()
            linear.bias.zero_()
            linear.weight[:8, :8] = torch.eye(8)
    subjects, groups = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 4, 0, 4, 0, 4])
    frames, tokens = 2, 5
    hidden = torch.zeros(6, frames, tokens, 32)
    hidden[..., :8] = 10.0
    hidden[..., 0] += 2.0 * subjects[:, None, None]  # identity along coordinate 0
    hidden[..., 1] += 3.0 * (groups[:, None, None] == 4)  # the label along coordinate 1
    hidden[..., 2] += torch.linspace(-1, 1, tokens)  # varies over tokens, not between people
    output = adapter(hidden.flatten(0, 1), frames, subjects, groups)

    basis = adapter.identity_basis
    torch.testing.assert_close(basis[:, 0].abs(), torch.eye(32)[0], atol=1e-5, rtol=0)
    assert basis[:, 1].abs().max() == 0
    assert output[..., 0].abs().max() < 1e-3  # the identity coordinate is gone
    torch.testing.assert_close(output[..., 1:8], hidden.flatten(0, 1)[..., 1:8], atol=1e-3, rtol=0)
    adapter.eval()  # the stored directions apply to anyone, without subject ids
    assert adapter(hidden.flatten(0, 1))[..., 0].abs().max() < 1e-3


def test_identity_projection_is_learnt_in_training_saved_and_loaded(tmp_path):
    """The directions start at zero, are found by training, are saved with the model (also by PEFT with the
    adapters) and reload to the same logits; the memory behind them is not saved."""
    from peft import PeftModel, get_peft_model

    model = tiny_model(identity_nullspace_rank=4)
    bases = [layer.shared_adapter.identity_basis for layer in model.adapter_layers]
    assert all(basis.abs().max() == 0 for basis in bases)
    inputs = batch(size=6)
    model.save_pretrained(tmp_path / "base")
    train_steps(model, inputs, steps=3)
    for basis in bases:
        gram = basis.T @ basis
        used = gram.diagonal() > 0.5
        assert used.any()  # orthonormal columns where there is between-subject spread, zero columns elsewhere
        torch.testing.assert_close(gram, torch.diag(used.float()), atol=1e-5, rtol=0)
    model.eval()
    evaluation = {"pixel_values": inputs["pixel_values"], "tfr_values": inputs["tfr_values"]}
    with torch.no_grad():
        expected = model(**evaluation).logits
    model.save_pretrained(tmp_path / "full")
    state = load_file(tmp_path / "full" / "model.safetensors")
    assert "adapter_layers.0.shared_adapter.identity_basis" in state
    assert not any(key.endswith("shared_adapter.means") for key in state)
    with torch.no_grad():
        reloaded = PhysioPromptForEmotionRecognition.from_pretrained(tmp_path / "full")(**evaluation).logits
    torch.testing.assert_close(reloaded, expected, rtol=0, atol=1e-6)

    peft_model = get_peft_model(PhysioPromptForEmotionRecognition.from_pretrained(tmp_path / "base"),
                                lora_config(model))
    train_steps(peft_model, inputs, steps=3)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert any("identity_basis" in key for key in load_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**evaluation).logits
    restored = PeftModel.from_pretrained(PhysioPromptForEmotionRecognition.from_pretrained(tmp_path / "base"),
                                         tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(**evaluation).logits, expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="identity_nullspace_rank"):
        tiny_config(identity_nullspace_rank=33)
