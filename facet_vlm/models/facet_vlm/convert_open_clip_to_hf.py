"""Conversion of open_clip CLIP checkpoints into transformers' `CLIPModel` (the towers FACET-VLM loads).

`load_open_clip_as_clip_model("ViT-B-16/openai")` builds the open_clip model (weights from open_clip's own cache or
download, or from a local checkpoint file or folder) and `clip_model_from_open_clip` maps its state dict onto a
transformers `CLIPModel` of the same shape: fused attention in-projections are split into q/k/v, MLP and layer-norm
names renamed, projections transposed.
`FacetVLMPreTrainedModel.from_clip` calls it for open_clip names; it is a sibling of the modeling file (copied with
it as Hub remote code) and imports `open_clip` only inside the loader.
"""

from __future__ import annotations

import os

from torch import nn
from transformers import CLIPModel

#: open_clip's name schemas (`open_clip.factory.parse_model_name`): a Hub repository or a local folder holding
#: ``open_clip_config.json`` and the weights.
OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:")


def is_open_clip_tag(name: str) -> bool:
    """Whether `name` names an open_clip model: `hf-hub:org/repo`, `local-dir:FOLDER`, or `ARCH/PRETRAINED` with an
    architecture such as `ViT-B-16` (no folder of that name exists) and an open_clip tag (`openai`) or a checkpoint
    file (`ViT-B-16//data/clip.safetensors`: everything after the first `/`)."""
    if name.startswith(OPEN_CLIP_SCHEMAS):
        return True
    architecture, _, pretrained = name.partition("/")
    if not pretrained or os.path.isdir(name) or os.path.isdir(architecture):
        return False
    looks_like_architecture = "-" in architecture and architecture[0].isupper()
    return looks_like_architecture and ("/" not in pretrained or os.path.isfile(pretrained))


def load_open_clip_as_clip_model(tag: str) -> CLIPModel:
    """Load an open_clip model (see `is_open_clip_tag` for the names) and convert its weights into a transformers
    `CLIPModel`. open_clip itself reads the checkpoint (a tag is downloaded into its cache; a file or folder is read
    from disk), the way `open_clip.create_model(architecture, pretrained=...)` does."""
    try:  # optional: only open_clip checkpoints need it (in a try block, so Hub remote code does not require it)
        import open_clip
    except ImportError as error:
        raise ImportError("loading an open_clip checkpoint needs open_clip: pip install open_clip_torch") from error

    if tag.startswith(OPEN_CLIP_SCHEMAS):
        source = open_clip.create_model(tag)
    else:
        architecture, _, pretrained = tag.partition("/")
        source = open_clip.create_model(architecture, pretrained=pretrained)
    return clip_model_from_open_clip(source)


def clip_model_from_open_clip(source: nn.Module) -> CLIPModel:
    """Convert an open_clip `CLIP` (ViT image tower, transformer text tower) into a transformers `CLIPModel`."""
    from transformers import CLIPConfig

    visual, state = source.visual, source.state_dict()
    if not hasattr(visual, "conv1"):
        raise ValueError("only open_clip models with a ViT image tower (visual.conv1) can be converted")
    vision_width = visual.conv1.out_channels
    text_width = source.token_embedding.embedding_dim
    gelu = "quick_gelu" if getattr(source, "quick_gelu", False) or _uses_quick_gelu(source) else "gelu"
    vision_layers, text_layers = len(visual.transformer.resblocks), len(source.transformer.resblocks)
    image_size = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
    patch_size = visual.patch_size[0] if isinstance(visual.patch_size, tuple) else visual.patch_size
    config = CLIPConfig(
        text_config={
            "vocab_size": source.token_embedding.num_embeddings, "hidden_size": text_width,
            "intermediate_size": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "num_hidden_layers": text_layers, "num_attention_heads": source.transformer.resblocks[0].attn.num_heads,
            "max_position_embeddings": source.positional_embedding.shape[0], "hidden_act": gelu,
            "projection_dim": source.text_projection.shape[1],
        },
        vision_config={
            "hidden_size": vision_width, "num_hidden_layers": vision_layers,
            "intermediate_size": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "num_attention_heads": visual.transformer.resblocks[0].attn.num_heads, "image_size": image_size,
            "patch_size": patch_size, "hidden_act": gelu, "projection_dim": visual.proj.shape[1],
        },
        projection_dim=visual.proj.shape[1],
    )
    converted = {
        "logit_scale": state["logit_scale"],
        "visual_projection.weight": state["visual.proj"].t(),
        "text_projection.weight": state["text_projection"].t(),
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
    }
    for source_prefix, target_prefix, layers in (
        ("visual.transformer.resblocks", "vision_model.encoder.layers", vision_layers),
        ("transformer.resblocks", "text_model.encoder.layers", text_layers),
    ):
        for i in range(layers):
            src, dst = f"{source_prefix}.{i}", f"{target_prefix}.{i}"
            for part in ("weight", "bias"):
                q, k, v = state[f"{src}.attn.in_proj_{part}"].chunk(3)
                converted.update({
                    f"{dst}.self_attn.q_proj.{part}": q, f"{dst}.self_attn.k_proj.{part}": k,
                    f"{dst}.self_attn.v_proj.{part}": v,
                    f"{dst}.self_attn.out_proj.{part}": state[f"{src}.attn.out_proj.{part}"],
                    f"{dst}.layer_norm1.{part}": state[f"{src}.ln_1.{part}"],
                    f"{dst}.layer_norm2.{part}": state[f"{src}.ln_2.{part}"],
                    f"{dst}.mlp.fc1.{part}": state[f"{src}.mlp.c_fc.{part}"],
                    f"{dst}.mlp.fc2.{part}": state[f"{src}.mlp.c_proj.{part}"],
                })
    model = CLIPModel(config)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [key for key in missing if not key.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"open_clip conversion left missing={missing} unexpected={unexpected}")
    return model.eval()


def _uses_quick_gelu(source: nn.Module) -> bool:
    """Whether the MLP activation of an open_clip model is QuickGELU (the openai checkpoints)."""
    return any(type(m).__name__ == "QuickGELU" for m in source.modules())


__all__ = ["clip_model_from_open_clip", "is_open_clip_tag", "load_open_clip_as_clip_model"]
