"""Where each ViT-family backbone keeps its parts: one small, explicit description per family.

GLIANet runs a frozen backbone block by block (a GLIA block goes in front of each), so it must know, per family, where
the embeddings, the blocks, the norms and the readout token are. Each family is one [`BackboneSpec`], registered under
its (vision) config's `model_type`; [`GLIAModel`] and the fine-tuning methods read only these descriptions, never
the family's name. The families of transformers 5 (class names and module paths as in its source):

| family (`model_type`) | class | blocks | before block 0 | final norm | leading tokens | head reads |
|---|---|---|---|---|---|---|
| ViT (`vit`) | `ViTModel` | `layers` | - | `layernorm` | CLS | CLS after `layernorm` |
| DeiT (`deit`) | `DeiTModel` | `layers` | - | `layernorm` | CLS, distillation | CLS after `layernorm` |
| DINOv2 (`dinov2`) | `Dinov2Model` | `encoder.layer` | - | `layernorm` | CLS | CLS after `layernorm` |
| DINOv2 + registers (`dinov2_with_registers`) | `Dinov2WithRegistersModel` | `encoder.layer` | - | `layernorm` | CLS, `num_register_tokens` registers | CLS after `layernorm` |
| CLIP vision (`clip_vision_model`) | `CLIPVisionModel` | `encoder.layers` | `pre_layrnorm` | `post_layernorm` | CLS | CLS after `post_layernorm` (= CLIP's `pooler_output`) |
| SigLIP vision (`siglip_vision_model`) | `SiglipVisionModel` | `encoder.layers` | - | `post_layernorm` | none | SigLIP's attention-pooling `head` on the tokens after `post_layernorm` (= its `pooler_output`); the mean of those tokens if the checkpoint has no head |

Notes per family:

- DeiT: the distillation token is skipped wherever patch positions are read; the head reads the CLS token alone
  (DeiT's own classifier averages a CLS head and a distillation head; GLIANet has one head).
- DINOv2: blocks carry layer scale (inside the block: nothing to do here); the registers sit between CLS and patches.
  The configs on the Hub say `image_size` 518 (the pre-training size) while the models are used at 224 (their image
  processor crops 224): GLIANet's default input is 224, and the position embeddings are interpolated (DINOv2's
  embeddings always do so). Patches are 14 px, so the default fragments are 8 x 8 of 28 px.
- CLIP: `last_hidden_state` of `CLIPVisionModel` has no final norm; CLIP applies `post_layernorm` to the pooled CLS
  token only. GLIANet applies `post_layernorm` to every token (a per-token norm, so the CLS token is exactly CLIP's
  `pooler_output`), and the guidance prior is made from those normed tokens.
- SigLIP: no CLS token. The head reads SigLIP's own pooled token: the frozen multi-head attention-pooling `head`
  (a learned probe attending to all tokens), as `SiglipVisionModel.pooler_output`. Attention maps of a family without
  a CLS token show the attention each patch receives, averaged over all query tokens.

A `CLIPModel` / `SiglipModel` config (or checkpoint) stands for its vision tower: its `vision_config` is used and the
text tower's weights are ignored.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedConfig

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
HALF = [0.5, 0.5, 0.5]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Fragments are about this many pixels on a side (the paper's 32): the multiple of the patch size nearest to it that
# tiles the input (16-px patches: 7 x 7 of 32 at 224; 14-px patches: 8 x 8 of 28).
TARGET_FRAGMENT_PIXELS = 32
# Generic names of the linear layers of one block (LoRA and the adapters target these) and what they are.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")


@dataclass(frozen=True)
class BackboneSpec:
    """How GLIANet finds its way around one backbone family (all paths are relative to the backbone model).

    Args:
        family: a short display name.
        model_type: the `model_type` of the family's (vision) config.
        model_class: the transformers class of the backbone, e.g. `"Dinov2Model"`.
        model_kwargs: extra constructor / `from_pretrained` arguments (e.g. no pooling layer).
        embeddings: the module that turns `pixel_values` into tokens (special tokens and position embeddings added).
        interpolation_flag: whether `embeddings` takes `interpolate_pos_encoding` (ViT, DeiT, CLIP, SigLIP); DINOv2's
            embeddings interpolate by themselves whenever the input differs from the pre-training size.
        pre_norm: a norm applied to the embeddings before the first block (CLIP's `pre_layrnorm`), or `None`.
        blocks: the `nn.ModuleList` of transformer blocks. Every family's block is called as
            `block(hidden_states, attention_mask)`, with `attention_mask=None`.
        projections: generic name (`PROJECTIONS`) -> path of that linear layer inside a block.
        mlp: the MLP inside a block (AdaptFormer's parallel adapter wraps it).
        final_norm: the norm after the last block.
        leading_tokens: special tokens in front of the patch tokens that are not registers (CLS, distillation).
        register_tokens_field: config field holding the number of register tokens after those, or `None`.
        readout: what the head reads: `"first"` (token 0 after the final norm) or `"pooling_head"` (the backbone's
            own pooling `head` on the normed tokens, or their mean if it has none).
        image_mean, image_std: the family's usual normalisation (used when the checkpoint states none).
        image_size: the default input side of a family whose embeddings interpolate their position embeddings by
            themselves (DINOv2: any side is accepted), or `None`: the backbone config's `image_size`, the only side
            accepted (see [`resolve_image_size`]).
        hub_id: the usual base-size checkpoint on the Hugging Face Hub.
    """

    family: str
    model_type: str
    model_class: str
    blocks: str
    final_norm: str
    projections: Mapping[str, str]
    leading_tokens: int
    readout: str
    image_mean: list[float]
    image_std: list[float]
    hub_id: str
    model_kwargs: Mapping[str, object] = field(default_factory=dict)
    embeddings: str = "embeddings"
    interpolation_flag: bool = True
    pre_norm: str | None = None
    mlp: str = "mlp"
    register_tokens_field: str | None = None
    image_size: int | None = None

    # ------------------------------------------------------------------------------------------- the backbone module

    def build(self, config: PreTrainedConfig) -> nn.Module:
        """A randomly initialised backbone of this family."""
        return self.backbone_class()(config, **self.model_kwargs)

    def backbone_class(self) -> type:
        import transformers

        return getattr(transformers, self.model_class)

    def block_list(self, backbone: nn.Module) -> nn.ModuleList:
        return backbone.get_submodule(self.blocks)

    def embed(self, backbone: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tokens entering block 0: patches, special tokens and position embeddings (interpolated if the input
        differs from the backbone's pre-training size), then the pre-norm if the family has one."""
        embeddings = backbone.get_submodule(self.embeddings)
        if self.interpolation_flag:
            native = _as_pair(backbone.config.image_size)
            tokens = embeddings(pixel_values, interpolate_pos_encoding=tuple(pixel_values.shape[-2:]) != native)
        else:
            tokens = embeddings(pixel_values)
        if self.pre_norm is not None:
            tokens = backbone.get_submodule(self.pre_norm)(tokens)
        return tokens

    def normalize(self, backbone: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """The final norm, on every token."""
        return backbone.get_submodule(self.final_norm)(hidden_states)

    def pool(self, backbone: nn.Module, normed: torch.Tensor) -> torch.Tensor:
        """`(N, L, hidden)` tokens after the final norm -> `(N, hidden)` the token the head reads."""
        if self.readout == "first":
            return normed[:, 0]
        head = getattr(backbone, "head", None) if getattr(backbone, "use_head", True) else None
        return head(normed) if head is not None else normed.mean(dim=1)

    # ------------------------------------------------------------------------------------------------- its config

    def num_leading_tokens(self, config: PreTrainedConfig) -> int:
        """Tokens in front of the patch tokens: CLS, distillation, registers (0 for SigLIP)."""
        registers = getattr(config, self.register_tokens_field) if self.register_tokens_field else 0
        return self.leading_tokens + int(registers)

    def resolve_image_size(self, config: PreTrainedConfig, image_size: int | None = None) -> int:
        """The input side of the model: `image_size` if given, else the family's default.

        A family without a default of its own (`self.image_size is None`: ViT, DeiT, CLIP, SigLIP) takes only its
        config's `image_size`; any other value is a `ValueError` naming both.
        """
        native = _as_pair(config.image_size)[0]
        if image_size is None:
            return self.image_size if self.image_size is not None else native
        if self.image_size is None and int(image_size) != native:
            raise ValueError(
                f"image_size {image_size} does not fit the {self.family} backbone, whose image_size is {native}: leave "
                "image_size out (or null) to use the backbone's, or change the backbone's image_size."
            )
        return int(image_size)


_VIT_PROJECTIONS = {
    "q_proj": "attention.q_proj",
    "k_proj": "attention.k_proj",
    "v_proj": "attention.v_proj",
    "o_proj": "attention.o_proj",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}
_CLIP_PROJECTIONS = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.out_proj",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}

FAMILIES: dict[str, BackboneSpec] = {
    spec.model_type: spec
    for spec in (
        BackboneSpec(
            family="ViT", model_type="vit", model_class="ViTModel", model_kwargs={"add_pooling_layer": False},
            blocks="layers", final_norm="layernorm", projections=_VIT_PROJECTIONS,
            leading_tokens=1, readout="first", image_mean=HALF, image_std=HALF,
            hub_id="google/vit-base-patch16-224",
        ),
        BackboneSpec(
            family="DeiT", model_type="deit", model_class="DeiTModel", model_kwargs={"add_pooling_layer": False},
            blocks="layers", final_norm="layernorm", projections=_VIT_PROJECTIONS,
            leading_tokens=2, readout="first", image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
            hub_id="facebook/deit-base-distilled-patch16-224",
        ),
        BackboneSpec(
            family="DINOv2", model_type="dinov2", model_class="Dinov2Model", interpolation_flag=False,
            blocks="encoder.layer", final_norm="layernorm", projections=_VIT_PROJECTIONS,
            leading_tokens=1, readout="first", image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, image_size=224,
            hub_id="facebook/dinov2-base",
        ),
        BackboneSpec(
            family="DINOv2 with registers", model_type="dinov2_with_registers", model_class="Dinov2WithRegistersModel",
            interpolation_flag=False, blocks="encoder.layer", final_norm="layernorm",
            projections=_VIT_PROJECTIONS, leading_tokens=1, register_tokens_field="num_register_tokens",
            readout="first", image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, image_size=224,
            hub_id="facebook/dinov2-with-registers-base",
        ),
        BackboneSpec(
            family="CLIP vision", model_type="clip_vision_model", model_class="CLIPVisionModel",
            pre_norm="pre_layrnorm", blocks="encoder.layers", final_norm="post_layernorm",
            projections=_CLIP_PROJECTIONS, leading_tokens=1, readout="first", image_mean=CLIP_MEAN,
            image_std=CLIP_STD, hub_id="openai/clip-vit-base-patch16",
        ),
        BackboneSpec(
            family="SigLIP vision", model_type="siglip_vision_model", model_class="SiglipVisionModel",
            blocks="encoder.layers", final_norm="post_layernorm",
            projections=_CLIP_PROJECTIONS, leading_tokens=0, readout="pooling_head", image_mean=HALF,
            image_std=HALF, hub_id="google/siglip-base-patch16-224",
        ),
    )
}
# Configs of two-tower models whose vision tower is the backbone.
VISION_TOWERS = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}


def backbone_spec(config: PreTrainedConfig) -> BackboneSpec:
    """The [`BackboneSpec`] of a backbone config; a `ValueError` listing the families for any other."""
    spec = FAMILIES.get(getattr(config, "model_type", None))
    if spec is None:
        raise ValueError(
            f"GLIANet has no description of a {type(config).__name__} backbone (model_type "
            f"{getattr(config, 'model_type', None)!r}); use one of the model types {sorted(FAMILIES)} "
            f"(or {sorted(VISION_TOWERS)} for their vision tower)."
        )
    return spec


def backbone_config_from(value: PreTrainedConfig | dict | None) -> PreTrainedConfig:
    """The backbone config of a config object or a dict of its fields (`model_type` picks the family, default `vit`).

    A CLIP or SigLIP two-tower config (or dict) gives its vision tower's config.
    """
    if value is None:
        value = {"model_type": "vit"}
    if isinstance(value, dict):
        fields = dict(value)
        model_type = fields.pop("model_type", None) or "vit"
        if model_type in VISION_TOWERS:
            fields = dict(fields.get("vision_config") or {})
            fields.pop("model_type", None)
            model_type = VISION_TOWERS[model_type]
        if model_type not in FAMILIES:
            raise ValueError(
                f"backbone model_type {model_type!r} is not supported; use one of {sorted(FAMILIES)} "
                f"(or {sorted(VISION_TOWERS)} for their vision tower)."
            )
        value = AutoConfig.for_model(model_type, **fields)
    if getattr(value, "model_type", None) in VISION_TOWERS:
        value = value.vision_config
    backbone_spec(value)
    return value


def default_fragments(image_size: int, patch_size: int) -> tuple[int, int]:
    """`(grid, fragment)` sides that tile `image_size` exactly with fragments of whole patches, the fragment the
    multiple of `patch_size` nearest to `TARGET_FRAGMENT_PIXELS` (ties: the smaller)."""
    patches = image_size // patch_size
    divisors = [k for k in range(1, patches + 1) if patches % k == 0]
    k = min(divisors, key=lambda d: (abs(d * patch_size - TARGET_FRAGMENT_PIXELS), d))
    return patches // k, k * patch_size


def _as_pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


__all__ = ["BackboneSpec", "FAMILIES", "PROJECTIONS", "backbone_config_from", "backbone_spec", "default_fragments"]
