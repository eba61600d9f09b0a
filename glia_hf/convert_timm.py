"""Load a timm ViT checkpoint (a Hub id or a local folder in timm's layout) as a transformers `ViTModel`.

timm publishes a model as two files (`timm/vit_base_patch16_224.augreg2_in21k_ft_in1k`, LoDa's backbone, is one):

- `config.json`: `{"architecture": "vit_base_patch16_224", "num_classes": ..., "pretrained_cfg": {"input_size":
  [3, 224, 224], "mean": [...], "std": [...], ...}, "model_args": {...}}` (older exports hold the `pretrained_cfg`
  fields at the top level). It has no `model_type`, which is how a timm folder is told from a transformers one.
- `model.safetensors` (or `pytorch_model.bin`) with timm's keys, `N` the block index:

      timm key                      ViTModel key (transformers 5)
      patch_embed.proj.{w,b}        embeddings.patch_embeddings.projection.{w,b}
      cls_token                     embeddings.cls_token
      pos_embed                     embeddings.position_embeddings
      blocks.N.norm1.{w,b}          layers.N.layernorm_before.{w,b}
      blocks.N.attn.qkv.{w,b}       layers.N.attention.{q,k,v}_proj.{w,b}   (fused rows [q; k; v], split in three)
      blocks.N.attn.proj.{w,b}      layers.N.attention.o_proj.{w,b}
      blocks.N.norm2.{w,b}          layers.N.layernorm_after.{w,b}
      blocks.N.mlp.fc1.{w,b}        layers.N.mlp.fc1.{w,b}
      blocks.N.mlp.fc2.{w,b}        layers.N.mlp.fc2.{w,b}
      norm.{w,b}                    layernorm.{w,b}
      head.*                        (the classifier: not part of the backbone, dropped)

The `ViTConfig` comes from the weights' shapes (width, depth, MLP width, patch size, channels, qkv bias), the image
size from `pretrained_cfg["input_size"]`, and the number of heads (which no shape shows) from `model_args["num_heads"]`
or else timm's size name in `architecture` (`vit_base_...`: 12). timm's layer norms use eps 1e-6 (the ViTConfig
default is 1e-12) and its MLP the exact GELU, as ViTModel's `"gelu"`. With those the converted model computes what
timm's computes, token for token.

A timm ViT variant whose weights have no place in ViTModel (register tokens, layer scale, a pre-norm, q/k norms, a
distillation token, average pooling with no final norm) is refused with an error naming the keys, never half-loaded.
"""

import json
import os
import re
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError
from transformers import ViTConfig, ViTModel
from transformers.modeling_utils import load_state_dict


TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TIMM_LAYER_NORM_EPS = 1e-6
# Heads of timm's ViT sizes (vision_transformer.py's model definitions); the other sizes are read from the weights.
TIMM_VIT_HEADS = {"tiny": 3, "small": 6, "medium": 8, "base": 12, "large": 16, "huge": 16, "giant": 16, "gigantic": 16}
_PER_BLOCK = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.o_proj",
    "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_TOP_LEVEL = {
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}


def _file(backbone: str | os.PathLike, filename: str) -> Path | None:
    """`filename` of a local folder or a Hub repository; `None` if the folder lacks it (the Hub raises if missing)."""
    if os.path.isdir(backbone):
        path = Path(backbone) / filename
        return path if path.is_file() else None
    return Path(hf_hub_download(str(backbone).removeprefix("hf-hub:"), filename))


def timm_checkpoint_config(backbone: str | os.PathLike) -> dict | None:
    """The `config.json` of a timm checkpoint, or `None` if `backbone` is not one (e.g. a transformers checkpoint)."""
    path = _file(backbone, "config.json")
    if path is None:
        return None
    config = json.loads(path.read_text())
    return config if "architecture" in config and "model_type" not in config else None


def timm_normalisation(backbone: str | os.PathLike) -> tuple[list[float], list[float]] | None:
    """The image mean and std that a timm checkpoint's `pretrained_cfg` gives, or `None` (not timm, or not stated)."""
    config = timm_checkpoint_config(backbone)
    if config is None:
        return None
    pretrained_cfg = config.get("pretrained_cfg", config)
    if "mean" not in pretrained_cfg or "std" not in pretrained_cfg:
        return None
    return [float(v) for v in pretrained_cfg["mean"]], [float(v) for v in pretrained_cfg["std"]]


def timm_vit_config(checkpoint_config: dict, state_dict: dict[str, torch.Tensor]) -> ViTConfig:
    """The `ViTConfig` of a timm ViT, from its `config.json` and its weights (see the module doc)."""
    architecture = checkpoint_config["architecture"]
    pretrained_cfg = checkpoint_config.get("pretrained_cfg", checkpoint_config)
    model_args = checkpoint_config.get("model_args") or {}
    if "patch_embed.proj.weight" not in state_dict or "cls_token" not in state_dict:
        raise ValueError(
            f"{architecture!r}: the weights have no patch_embed.proj.weight or cls_token; only timm ViTs with a class "
            "token convert to a transformers ViTModel."
        )
    hidden_size, num_channels, patch_height, patch_width = state_dict["patch_embed.proj.weight"].shape
    if patch_height != patch_width:
        raise ValueError(f"{architecture!r}: non-square patches ({patch_height}x{patch_width}) are not supported.")
    depth = 1 + max((int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if depth == 0:
        raise ValueError(f"{architecture!r}: the weights hold no `blocks.N.` keys; is this a timm ViT?")

    num_heads = model_args.get("num_heads")
    if num_heads is None:
        size = re.match(r"(?:vit|deit3?)_([a-z]+)_", architecture)
        num_heads = TIMM_VIT_HEADS.get(size.group(1)) if size else None
    if num_heads is None:
        raise ValueError(
            f"Cannot tell the number of attention heads of timm architecture {architecture!r}: add "
            '"model_args": {"num_heads": H} to its config.json.'
        )

    input_size = model_args.get("img_size") or pretrained_cfg.get("input_size", [None])[1:]
    if isinstance(input_size, int):
        input_size = [input_size, input_size]
    if not input_size or None in input_size:
        raise ValueError(f"{architecture!r}: config.json gives no input size (pretrained_cfg.input_size).")
    height, width = (int(v) for v in input_size)
    num_positions = (height // patch_height) * (width // patch_width) + 1
    if state_dict["pos_embed"].shape[1] != num_positions:
        raise ValueError(
            f"{architecture!r}: pos_embed holds {state_dict['pos_embed'].shape[1]} positions, but a class token and "
            f"{height}x{width} images in {patch_height}px patches need {num_positions}; this timm variant (e.g. "
            "no_embed_class or extra tokens) does not convert to ViTModel."
        )
    return ViTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=depth,
        num_attention_heads=num_heads,
        intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        hidden_act="gelu",
        layer_norm_eps=TIMM_LAYER_NORM_EPS,
        image_size=height if height == width else [height, width],
        patch_size=patch_height,
        num_channels=num_channels,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def convert_timm_vit_state_dict(state_dict: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Rename timm ViT weights to ViTModel's keys and split the fused qkv (see the module doc).

    Raises a `ValueError` naming the keys that have no place in ViTModel; the classifier (`head.*`) is dropped.
    """
    converted, used = {}, set()
    for timm_key, key in _TOP_LEVEL.items():
        if timm_key in state_dict:
            converted[key] = state_dict[timm_key]
            used.add(timm_key)
    for index in range(num_layers):
        timm_block, block = f"blocks.{index}.", f"layers.{index}."
        for suffix in ("weight", "bias"):
            for timm_name, name in _PER_BLOCK.items():
                timm_key = f"{timm_block}{timm_name}.{suffix}"
                if timm_key in state_dict:
                    converted[f"{block}{name}.{suffix}"] = state_dict[timm_key]
                    used.add(timm_key)
            qkv_key = f"{timm_block}attn.qkv.{suffix}"
            if qkv_key in state_dict:
                for name, part in zip(("q_proj", "k_proj", "v_proj"), state_dict[qkv_key].chunk(3, dim=0)):
                    converted[f"{block}attention.{name}.{suffix}"] = part.clone()
                used.add(qkv_key)
    left_over = sorted(key for key in state_dict if key not in used and not key.startswith("head."))
    if left_over:
        raise ValueError(
            f"This timm ViT has weights that a transformers ViTModel has no place for: {fold_key_names(left_over)}. "
            "Only plain timm ViTs (class token, pre-norm blocks, final norm) convert."
        )
    return converted


def load_timm_vit(backbone: str | os.PathLike) -> ViTModel:
    """A `ViTModel` (no pooler) holding the weights of the timm ViT checkpoint `backbone` (Hub id or local folder).

    Every weight of the ViTModel must come from the checkpoint: a `ValueError` names any that do not.
    """
    checkpoint_config = timm_checkpoint_config(backbone)
    if checkpoint_config is None:
        raise ValueError(f"{backbone} is not a timm checkpoint (its config.json has no 'architecture').")
    weights, hub_error = None, None
    for filename in TIMM_WEIGHT_FILES:
        try:
            weights = _file(backbone, filename)
        except RemoteEntryNotFoundError as error:  # the repository has no such file: try the next name
            hub_error = error
        except LocalEntryNotFoundError as error:  # offline and not cached: the next name may be cached
            hub_error = error
        if weights is not None:
            break
    if weights is None:
        if hub_error is not None:
            raise hub_error
        raise FileNotFoundError(f"{backbone} has none of the timm weight files {TIMM_WEIGHT_FILES}.")
    state_dict = load_state_dict(str(weights))
    config = timm_vit_config(checkpoint_config, state_dict)
    converted = convert_timm_vit_state_dict(state_dict, config.num_hidden_layers)
    model = ViTModel(config, add_pooling_layer=False)
    missing = sorted(set(model.state_dict()) - set(converted))
    if missing:
        names = fold_key_names(_timm_key(key) for key in missing)
        raise ValueError(f"The timm checkpoint {backbone} lacks backbone weights: {names}.")
    model.load_state_dict(converted, strict=True)
    return model.eval()


def _timm_key(key: str) -> str:
    """The timm name of a ViTModel weight (the inverse of the table in the module doc)."""
    top_level = {name: timm_name for timm_name, name in _TOP_LEVEL.items()}
    if key in top_level:
        return top_level[key]
    match = re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", key)
    if match is None:
        return key
    index, name, suffix = match.groups()
    if name in ("attention.q_proj", "attention.k_proj", "attention.v_proj"):
        return f"blocks.{index}.attn.qkv.{suffix}"
    per_block = {name: timm_name for timm_name, name in _PER_BLOCK.items()}
    return f"blocks.{index}.{per_block.get(name, name)}.{suffix}"


def fold_key_names(keys) -> str:
    """Weight names with block indices folded (`layers.*.mlp.fc1.weight`), so that a long list stays readable."""
    folded = sorted(set(re.sub(r"(blocks|layers|layer)\.\d+\.", r"\1.*.", key) for key in keys))
    return ", ".join(folded)


__all__ = [
    "convert_timm_vit_state_dict",
    "fold_key_names",
    "load_timm_vit",
    "timm_checkpoint_config",
    "timm_normalisation",
    "timm_vit_config",
]
