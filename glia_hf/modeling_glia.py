"""GLIANet: a frozen ViT seen through a semantic and a detail stream, fused by Global-Local Interaction Adapters.

The backbone may be any ViT-family model (ViT, DeiT, DINOv2 with or without registers, CLIP's or SigLIP's vision
tower); where each keeps its embeddings, blocks, norms and readout token is described once per family in
`backbones.py`, and the code below reads only those descriptions.

The equations implemented here, per GLIA block placed in front of frozen ViT block `l` (`x`: main-stream tokens,
`p`: the latent prior, initially `p = proj(LN(ViT(guidance image)))`):

    z = down(x)                                        # hidden -> latent MLP
    z = z + lambda_d * MHCA(query=z, key/value=p)      # Local-Global Fusion (paper Eq. 3), `use_lgf`
    x = x + up(z)                                      # latent -> hidden MLP, last layer zero-initialised
    p = p + lambda_s * MHCA(query=p, key/value=z)      # Global-Local Refine (paper Eq. 4), `use_glr`
    x = ViTBlock_l(x)                                  # frozen

The score is `head(dropout(readout(LN(x))))` mapped from [0, 1] to the data set's score range, `readout` the CLS
token (SigLIP, which has none: its attention-pooling head), `LN` the backbone's final norm.
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs, maybe_install_capturing_hooks

from .backbones import FAMILIES, backbone_config_from, backbone_spec
from .configuration_glia import LOSSES, GLIAConfig


@dataclass
class GLIAModelOutput(ModelOutput):
    """Output of [`GLIAModel`].

    Args:
        last_hidden_state: `(N, L, hidden)` main-stream tokens after the backbone's final norm, `N = batch * views`.
        pooler_output: `(N, hidden)` the token the head reads (the CLS token of `last_hidden_state`; see
            `backbones.py` per family).
        prior: `(N, L', latent)` the guidance prior after the last GLIA block.
        hidden_states: main-stream tokens after the embeddings and after each block, when asked for.
        attentions: self-attention weights of each frozen block of the main stream, when asked for.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    prior: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ImageQualityAssessmentOutput(ModelOutput):
    """Output of [`GLIAForImageQualityAssessment`].

    Args:
        loss: the training loss on normalised labels, when `labels` are given.
        score: `(B,)` predicted quality on the data set's scale (higher is better), averaged over the views.
        normalized_score: `(B,)` the same prediction on the [0, 1] training scale.
        hidden_states, attentions: as in [`GLIAModelOutput`], when asked for.
    """

    loss: torch.FloatTensor | None = None
    score: torch.FloatTensor | None = None
    normalized_score: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class GLIAMLP(nn.Module):
    """Two linear layers with a GELU between them: the adapter's down- and up-projections."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.activation = ACT2FN["gelu"]
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class GLIACrossAttention(nn.Module):
    """Multi-head cross-attention in the latent space: `query` attends to `context`."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, dim = states.shape
        return states.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.q_proj(query))
        k = self._split_heads(self.k_proj(context))
        v = self._split_heads(self.v_proj(context))
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.o_proj(attended.transpose(1, 2).reshape(query.shape))


class GLIABlock(nn.Module):
    """One Global-Local Interaction Adapter, placed in front of a frozen ViT block (equations in the module doc)."""

    def __init__(self, config: GLIAConfig, refine_prior: bool = True):
        """`refine_prior=False` leaves out the GLR step: the model does so where no later block would read the prior."""
        super().__init__()
        hidden_size = config.backbone_config.hidden_size
        lambda_shape = (config.latent_dim,) if config.lambda_shape == "vector" else ()
        self.down = GLIAMLP(hidden_size, config.adapter_down_hidden_size, config.latent_dim)
        self.up = GLIAMLP(config.latent_dim, config.adapter_up_hidden_size, hidden_size)
        self.local_global_fusion = None
        self.global_local_refine = None
        if config.use_lgf:
            self.local_global_fusion = GLIACrossAttention(config.latent_dim, config.cross_attention_heads)
            self.lambda_d = nn.Parameter(torch.full(lambda_shape, float(config.lambda_init)))
        if config.use_glr and refine_prior:
            self.global_local_refine = GLIACrossAttention(config.latent_dim, config.cross_attention_heads)
            self.lambda_s = nn.Parameter(torch.full(lambda_shape, float(config.lambda_init)))

    def forward(self, hidden_states: torch.Tensor, prior: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        latent = self.down(hidden_states)
        if self.local_global_fusion is not None and prior is not None:
            latent = latent + self.lambda_d * self.local_global_fusion(latent, prior)
        hidden_states = hidden_states + self.up(latent)
        if self.global_local_refine is not None and prior is not None:
            prior = prior + self.lambda_s * self.global_local_refine(prior, latent)
        return hidden_states, prior


class GLIAPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the Hugging Face plumbing shared by the GLIANet models."""

    config_class = GLIAConfig
    base_model_prefix = "glia"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = [
        "ViTEmbeddings", "ViTLayer", "DeiTEmbeddings", "DeiTLayer", "Dinov2Embeddings", "Dinov2Layer",
        "Dinov2WithRegistersEmbeddings", "Dinov2WithRegistersLayer", "CLIPVisionEmbeddings", "CLIPEncoderLayer",
        "SiglipVisionEmbeddings", "SiglipEncoderLayer", "GLIABlock",
    ]
    _supports_sdpa = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, GLIABlock):
            # The injection starts at exactly zero: the frozen ViT first sees its pre-trained input.
            init.zeros_(module.up.fc2.weight)
            init.zeros_(module.up.fc2.bias)
            for name in ("lambda_d", "lambda_s"):
                if hasattr(module, name):
                    init.constant_(getattr(module, name), self.config.lambda_init)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """Load as usual, then freeze the backbone again as `config.freeze_backbone` says.

        Stands in for a post-load hook, which transformers 5 does not have: its loader
        (`core_model_loading.set_param_for_module`) wraps every loaded tensor in a new `nn.Parameter` that requires
        grad, undoing the freeze that `__init__` applied.
        """
        model = super().from_pretrained(*args, **kwargs)
        for module in model.modules():
            if isinstance(module, GLIAModel):
                module.freeze_backbone()
        return model


class GLIAModel(GLIAPreTrainedModel):
    """The frozen backbone with its two streams and the GLIA blocks; returns main-stream tokens and the refined prior.

    The backbone module is `self.vit` whatever its family (the name of the first one, kept so that every saved
    checkpoint's weight names stay valid); `self.backbone_spec` says where its parts are (see `backbones.py`).
    """

    # `capture_outputs` records `attentions` where the backbone's own `_can_record_outputs` says (transformers applies a
    # sub-model's declaration to its modules); no module of GLIA's own adds any.
    _can_record_outputs = {"attentions": []}

    def __init__(self, config: GLIAConfig):
        super().__init__(config)
        self.backbone_spec = backbone_spec(config.backbone_config)
        self.vit = self.backbone_spec.build(config.backbone_config)
        # Only modules that can reach the score are built, so that every trainable parameter gets a gradient (which
        # distributed data parallel training requires): the prior exists only if some block reads it (LGF), and the
        # last block does not refine a prior that nothing reads afterwards.
        self.uses_prior = config.use_lgf and len(config.glia_layers) > 0
        self.prior_projection = (
            nn.Linear(config.backbone_config.hidden_size, config.latent_dim) if self.uses_prior else None
        )
        last = config.glia_layers[-1] if config.glia_layers else None
        self.glia_blocks = nn.ModuleDict(
            {str(i): GLIABlock(config, refine_prior=self.uses_prior and i != last) for i in config.glia_layers}
        )
        self.post_init()
        self.freeze_backbone()
        # Hooked now, not at the first request as `capture_outputs` would: were the backbone asked for its own
        # attentions first, it would hook its modules itself and transformers would hook them again from here
        # (`recursively_install_hooks` skips no sub-model already hooked), recording every attention twice.
        maybe_install_capturing_hooks(self)

    @property
    def backbone_blocks(self) -> nn.ModuleList:
        """The backbone's transformer blocks, in order (GLIA block `i` runs in front of block `i`)."""
        return self.backbone_spec.block_list(self.vit)

    @property
    def num_leading_tokens(self) -> int:
        """Special tokens in front of the patch tokens (CLS, distillation, registers; none for SigLIP)."""
        return self.backbone_spec.num_leading_tokens(self.config.backbone_config)

    def freeze_backbone(self) -> None:
        """Stop gradients to the ViT weights when the configuration asks for a frozen backbone (GLIANet always does)."""
        if self.config.freeze_backbone:
            self.vit.requires_grad_(False)

    def encode_guidance(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Final tokens (after the final norm) of the plain backbone on the guidance image: `Fs` in the paper.

        Runs without autograd when the backbone is frozen. The result depends on the image alone, so a training loop
        may cache it and pass it back as `guidance_hidden_states`.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_backbone):
            hidden_states = self.backbone_spec.embed(self.vit, self._cast(pixel_values))
            for layer in self.backbone_blocks:
                hidden_states = layer(hidden_states, None)
            return self.backbone_spec.normalize(self.vit, hidden_states)

    def _cast(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.to(self.vit.dtype)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        fragment_values: torch.Tensor | None = None,
        guidance_hidden_states: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> GLIAModelOutput:
        r"""
        Args:
            pixel_values: `(B, 3, S, S)` the resized whole images (semantic stream).
            fragment_values: `(B, 3, h, w)` or `(B, K, 3, h, w)` the tiled fragments (detail stream), `K` views each.
            guidance_hidden_states: the cached output of [`encode_guidance`] for this batch, to skip that pass.
            output_attentions: return the self-attention weights of the frozen blocks on the main stream (needs
                `attn_implementation="eager"`); the guidance pass's are not returned.
            return_dict: `False` for a plain tuple (handled by transformers' `can_return_tuple`).
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        main_input, guidance_input, views = self._stream_inputs(pixel_values, fragment_values)
        prior = None
        if self.uses_prior:
            if guidance_hidden_states is None:
                guidance_hidden_states = self.encode_guidance(guidance_input)
            if config.guidance_stream == "semantic" and views is not None:
                guidance_hidden_states = _repeat_per_view(guidance_hidden_states, views)
            prior = self.prior_projection(guidance_hidden_states)
        # The guidance pass above runs the same backbone blocks: it stays outside the recorded pass, so that only the
        # main stream's attentions are recorded.
        output = self._main_stream(
            main_input, prior, views, output_hidden_states=output_hidden_states, output_attentions=output_attentions,
            return_dict=True,
        )
        if output_attentions and len(output.attentions) != len(self.backbone_blocks):
            raise ValueError(
                "Attention weights are only returned by the eager attention: load the model with "
                'attn_implementation="eager" or call model.set_attn_implementation("eager").'
            )
        return output

    @capture_outputs(tie_last_hidden_states=False)
    def _main_stream(self, main_input, prior, views, output_hidden_states=None, output_attentions=None):
        """The main stream through the GLIA and backbone blocks; `capture_outputs` records its `attentions`.

        `hidden_states` are gathered here rather than recorded: the first is the embeddings, before GLIA block 0
        (what `OutputRecorder(capture_initial_hidden_state=True)` on the backbone blocks would take is the input of
        block 0, after that GLIA block), and the last is before the final norm.
        """
        config = self.config
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        hidden_states = self.backbone_spec.embed(self.vit, self._cast(main_input))
        if config.main_stream == "semantic" and views is not None:
            hidden_states = _repeat_per_view(hidden_states, views)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for index, layer in enumerate(self.backbone_blocks):
            if str(index) in self.glia_blocks:
                hidden_states, prior = self.glia_blocks[str(index)](hidden_states, prior)
            hidden_states = layer(hidden_states, None)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        last_hidden_state = self.backbone_spec.normalize(self.vit, hidden_states)
        return GLIAModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=self.backbone_spec.pool(self.vit, last_hidden_state),
            prior=prior,
            hidden_states=all_hidden_states,
        )

    def _stream_inputs(self, pixel_values, fragment_values) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return (main-stream input, guidance-stream input, a tensor whose dim 1 is the number of fragment views).

        The third item is `None` when the detail stream is not used or has one view per image. Nothing here branches
        on a tensor's size, only on its rank and the configuration, so that a traced or exported graph keeps the
        batch size and the number of views dynamic; the checks that need sizes live in [`check_inputs`].
        """
        config = self.config
        if not _is_exporting():
            self.check_inputs(pixel_values, fragment_values)
        needed = {config.main_stream, config.guidance_stream} if self.uses_prior else {config.main_stream}
        views = None
        fragments = fragment_values
        if fragment_values is not None and fragment_values.ndim == 5:
            views, fragments = fragment_values, fragment_values.flatten(0, 1)
        if "detail" not in needed:
            views = None
        streams = {"semantic": pixel_values, "detail": fragments}
        return streams[config.main_stream], streams[config.guidance_stream], views

    def check_inputs(self, pixel_values, fragment_values) -> None:
        """Raise a `ValueError` saying what to change when the inputs do not fit this configuration.

        Called by `forward`, except while the model is traced or exported (`torch.jit.trace`, `torch.export`,
        `torch.onnx.export`): its checks on sizes would freeze the batch size and number of views into the graph.
        """
        config = self.config
        needed = {config.main_stream, config.guidance_stream} if self.uses_prior else {config.main_stream}
        if "semantic" in needed and pixel_values is None:
            raise ValueError("pixel_values (the resized whole images) are required by this configuration.")
        if "detail" in needed and fragment_values is None:
            raise ValueError("fragment_values (the tiled fragments) are required by this configuration.")
        if pixel_values is not None and pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must have shape (B, 3, H, W), got {tuple(pixel_values.shape)}.")
        if fragment_values is not None and fragment_values.ndim not in (4, 5):
            raise ValueError(
                f"fragment_values must have shape (B, 3, h, w) or (B, K, 3, h, w), got {tuple(fragment_values.shape)}."
            )
        if pixel_values is not None and fragment_values is not None and len(pixel_values) != len(fragment_values):
            raise ValueError(
                "pixel_values and fragment_values hold different numbers of images: "
                f"{len(pixel_values)} and {len(fragment_values)}."
            )
        if any(values is not None and len(values) == 0 for values in (pixel_values, fragment_values)):
            raise ValueError("Received an empty batch.")
        if fragment_values is not None and fragment_values.ndim == 5 and fragment_values.shape[1] == 0:
            raise ValueError("fragment_values holds no views: K must be at least 1 in (B, K, 3, h, w).")


class GLIAForImageQualityAssessment(GLIAPreTrainedModel):
    """GLIANet: [`GLIAModel`] with a regression head on the main stream's readout token, predicting one quality score."""

    def __init__(self, config: GLIAConfig):
        super().__init__(config)
        self.glia = GLIAModel(config)
        self.dropout = nn.Dropout(config.head_dropout)
        self.regressor = nn.Linear(config.backbone_config.hidden_size, 1)
        self.post_init()

    @classmethod
    def from_backbone(cls, backbone: str | PreTrainedConfig | dict, **glia_options) -> "GLIAForImageQualityAssessment":
        """Build GLIANet around a ViT-family backbone, loaded then frozen.

        Args:
            backbone: one of
                - a Hub model id or local directory of a transformers checkpoint of any family in `backbones.py`
                  (ViT, DeiT, DINOv2, DINOv2 with registers, CLIP, SigLIP; a `CLIPModel` / `SiglipModel` checkpoint
                  gives its vision tower; ViT checkpoints in the transformers 4 key layout are converted on load);
                - a timm ViT checkpoint (`config.json` with `architecture` and `pretrained_cfg`, timm's weight keys),
                  e.g. `timm/vit_base_patch16_224.augreg2_in21k_ft_in1k`, converted on load by
                  `convert_timm.load_timm_vit`;
                - a backbone config (`ViTConfig`, `Dinov2Config`, `CLIPVisionConfig`, ...) or a dict of its fields
                  with a `model_type` key (default `"vit"`), for a randomly initialised backbone.
            glia_options: any [`GLIAConfig`] argument, e.g. `latent_dim=64`, `use_glr=False`, `score_min=1.0`.

        The model's `config.image_mean` / `config.image_std` are set to the backbone's normalisation (unless given
        in `glia_options`): its `preprocessor_config.json`, else timm's `pretrained_cfg`, else the family's usual
        values; `GLIAImageProcessor.from_config(model.config)` uses them. The input size and the fragment grid
        default to the family's (see [`GLIAConfig`]).

        Raises:
            ValueError: naming the backbone weights that the checkpoint does not hold. Every weight of the backbone
                must load; weights it has no use for (a classifier, a pooler, a text tower) are ignored.
        """
        if isinstance(backbone, (PreTrainedConfig, dict)):
            config = backbone_config_from(backbone)
            _default_normalisation(glia_options, backbone_spec(config), None)
            return cls(GLIAConfig(backbone_config=config, **glia_options))
        # Imported here: only building from a checkpoint needs it, never loading a saved GLIANet.
        from .convert_timm import fold_key_names, load_timm_vit, timm_checkpoint_config, timm_normalisation

        if timm_checkpoint_config(backbone) is not None:
            vit = load_timm_vit(backbone)
            stated = timm_normalisation(backbone)
        else:
            from transformers import AutoConfig

            spec = backbone_spec(backbone_config_from(AutoConfig.from_pretrained(backbone)))
            vit, loading_info = spec.backbone_class().from_pretrained(
                backbone, output_loading_info=True, **spec.model_kwargs
            )
            if loading_info["missing_keys"]:
                raise ValueError(
                    f"The backbone {backbone} does not hold all the weights of a {spec.model_class}; missing: "
                    f"{fold_key_names(loading_info['missing_keys'])}. "
                    f"Point it at a transformers checkpoint of one of the families {sorted(FAMILIES)} or a timm ViT "
                    "checkpoint (config.json with 'architecture')."
                )
            stated = _stated_normalisation(backbone)
        _default_normalisation(glia_options, backbone_spec(vit.config), stated)
        model = cls(GLIAConfig(backbone_config=vit.config, **glia_options))
        model.glia.vit.load_state_dict(vit.state_dict())
        return model

    @torch.no_grad()
    def fold_affine_into_head(self, scale: float, shift: float) -> None:
        """Make the head predict `scale * n + shift` where it predicted `n` (both on the [0, 1] training scale).

        A correlation loss such as PLCC leaves the scale and offset of the predictions free; fitting them on the
        training labels afterwards and folding them into the head puts `score` back on the data set's scale without
        changing any rank or correlation.
        """
        self.regressor.weight.mul_(scale)
        self.regressor.bias.mul_(scale).add_(shift)

    def normalize_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Map scores on the data set's scale to the [0, 1] training scale."""
        return (labels - self.config.score_min) / (self.config.score_max - self.config.score_min)

    def denormalize_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """Map predictions on the [0, 1] training scale back to the data set's scale."""
        return scores * (self.config.score_max - self.config.score_min) + self.config.score_min

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        fragment_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        guidance_hidden_states: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> ImageQualityAssessmentOutput:
        r"""
        Args:
            pixel_values: `(B, 3, S, S)` the resized whole images, from [`GLIAImageProcessor`].
            fragment_values: `(B, 3, h, w)` or `(B, K, 3, h, w)` the tiled fragments; with `K` views the score is the
                mean of the views' scores.
            labels: `(B,)` quality scores on the data set's scale; when given, `loss` is computed.
            guidance_hidden_states: cached guidance tokens (see [`GLIAModel.encode_guidance`]).
            return_dict: `False` for a plain tuple (handled by transformers' `can_return_tuple`).
        """
        outputs = self.glia(
            pixel_values=pixel_values,
            fragment_values=fragment_values,
            guidance_hidden_states=guidance_hidden_states,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        batch_size = (pixel_values if pixel_values is not None else fragment_values).shape[0]
        # The head, the scores and the loss run in float32 whatever the autocast or the backbone's dtype: bfloat16
        # holds about 3 significant digits (steps of 1/32 near a score of 4), enough to tie thousands of test images
        # and to make a correlation loss over a batch noisy.
        with _autocast_disabled(outputs.pooler_output.device.type):
            pooled = self.dropout(outputs.pooler_output.float())
            view_scores = F.linear(pooled, self.regressor.weight.float(), self.regressor.bias.float()).squeeze(-1)
            normalized_score = view_scores.view(batch_size, -1).mean(dim=1)
            score = self.denormalize_scores(normalized_score)
        loss = None
        if labels is not None:
            loss = quality_loss(normalized_score, self.normalize_labels(labels.to(normalized_score)), self.config.loss)
        return ImageQualityAssessmentOutput(
            loss=loss,
            score=score,
            normalized_score=normalized_score,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def _is_exporting() -> bool:
    """Whether the model is being traced or exported (TorchScript, torch.export / dynamo, ONNX)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def _repeat_per_view(states: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """`(B, ...)` -> `(B * K, ...)`, each image's states repeated for its `K = views.shape[1]` fragment views.

    Equal to `states.repeat_interleave(K, dim=0)`, written with `expand` so that `K` stays a dimension of the graph
    (not a constant) when the model is traced or exported.
    """
    expanded = states.unsqueeze(1).expand(states.shape[0], views.shape[1], *states.shape[1:])
    return expanded.flatten(0, 1)


def quality_loss(predictions: torch.Tensor, targets: torch.Tensor, kind: str = "plcc") -> torch.Tensor:
    """Training loss between predicted and target scores on the normalised scale, computed in float32.

    With `r` the Pearson correlation over the batch, and `p`, `t` the predictions and targets standardised over the
    batch (mean 0, population standard deviation 1, so that `r = mean(p * t)`):

    - `"plcc"`: `(1 - r) / 2`, 0 for perfect agreement.
    - `"loda_plcc"`: the form of LoDa's `plcc_loss`, `(mse(p, t) / 4 + mse(r * p, t) / 4) / 2`. Since
      `mse(p, t) = 2 (1 - r)` and `mse(r p, t) = 1 - r^2`, it equals `((1 - r) / 2 + (1 - r^2) / 4) / 2`: the same
      optimum as `"plcc"`, other gradient weighting: its derivative in `r` is `(1 + r) / 2` times `"plcc"`'s, so
      badly correlated batches pull less (and a batch at `r = -1` not at all). `r` is not detached. As in LoDa,
      the standard deviations get `1e-8` added before dividing.
    - `"mse"`, `"l1"`: the mean squared and mean absolute errors.

    The correlation losses are defined for two or more samples; a batch of one falls back to the squared error.
    """
    if predictions.shape != targets.shape:
        raise ValueError(f"labels must have shape {tuple(predictions.shape)}, got {tuple(targets.shape)}.")
    if kind not in LOSSES:
        raise ValueError(f"Unknown loss {kind!r}; choose one of {LOSSES}.")
    with _autocast_disabled(predictions.device.type):
        predictions, targets = predictions.float(), targets.float()
        if kind == "mse" or (kind in ("plcc", "loda_plcc") and predictions.numel() < 2):
            return F.mse_loss(predictions, targets)
        if kind == "l1":
            return F.l1_loss(predictions, targets)
        if kind == "loda_plcc":
            pred_std, pred_mean = torch.std_mean(predictions, correction=0)
            target_std, target_mean = torch.std_mean(targets, correction=0)
            pred = (predictions - pred_mean) / (pred_std + 1e-8)
            target = (targets - target_mean) / (target_std + 1e-8)
            correlation = (pred * target).mean()
            return (F.mse_loss(pred, target) / 4 + F.mse_loss(correlation * pred, target) / 4) / 2
        pred = predictions - predictions.mean()
        target = targets - targets.mean()
        correlation = (pred * target).sum() / (pred.norm() * target.norm()).clamp_min(1e-8)
        return (1 - correlation) / 2


def _stated_normalisation(backbone) -> tuple[list[float], list[float]] | None:
    """`(image_mean, image_std)` from a checkpoint's `preprocessor_config.json`, or `None` if it states none."""
    import json

    from transformers.utils import cached_file

    path = cached_file(
        backbone,
        "preprocessor_config.json",
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    if not path:
        return None
    stored = json.loads(Path(path).read_text())
    if stored.get("image_mean") is None or stored.get("image_std") is None:
        return None
    return list(stored["image_mean"]), list(stored["image_std"])


def _default_normalisation(glia_options: dict, spec, stated) -> None:
    """Fill `image_mean` / `image_std` in `glia_options` (unless given): as stated, else the family's usual ones."""
    mean, std = stated if stated is not None else (spec.image_mean, spec.image_std)
    glia_options.setdefault("image_mean", list(mean))
    glia_options.setdefault("image_std", list(std))


def _autocast_disabled(device_type: str):
    """A context in which autocast is off on `device_type` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


__all__ = ["GLIAPreTrainedModel", "GLIAModel", "GLIAForImageQualityAssessment", "GLIABlock", "quality_loss"]
