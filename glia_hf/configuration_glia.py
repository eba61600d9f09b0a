"""Configuration of GLIANet, the Global-Local Interaction Adapter model for blind image quality assessment."""

from transformers import PreTrainedConfig, ViTConfig


STREAMS = ("semantic", "detail")
LOSSES = ("plcc", "mse", "l1", "loda_plcc")  # loda_plcc: placeholder name in wt-h; wt-c implements the loss
LAMBDA_SHAPES = ("scalar", "vector")


class GLIAConfig(PreTrainedConfig):
    r"""
    Configuration of a [`GLIAForImageQualityAssessment`]. It holds the configuration of the frozen ViT backbone and
    everything GLIANet adds around it: the two input streams, the GLIA blocks, the regression head and the score scale.

    The two streams seen by the model:

    - the *semantic* stream: the whole image resized to `image_size` (`pixel_values`);
    - the *detail* stream: a `grid_size` grid of `fragment_size` full-resolution fragments tiled into one image
      (`fragment_values`).

    One stream is the *main* stream (it runs through the adapted ViT blocks and its CLS token is scored), the other is
    the *guidance* stream (its final tokens, projected to `latent_dim`, are the prior that the GLIA blocks attend to).
    The paper's design is guidance = semantic, main = detail; the other combinations are the ablations of its Table 5.

    Args:
        backbone_config (`ViTConfig` or `dict`, *optional*):
            Configuration of the ViT backbone. Defaults to ViT-B/16 at 224 px.
        image_size (`int`, *optional*):
            Side of the resized whole image of the semantic stream. Defaults to the backbone's `image_size`.
        grid_size (`tuple[int, int]`, *optional*, defaults to `(7, 7)`):
            Number of grid cells `(nh, nw)` of the fragment sampler.
        fragment_size (`tuple[int, int]`, *optional*, defaults to `(32, 32)`):
            Size `(fh, fw)` of each fragment in pixels. `grid_size * fragment_size` must equal the backbone's input
            size and each fragment must hold a whole number of ViT patches.
        latent_dim (`int`, *optional*, defaults to 64):
            Width of the latent space in which the GLIA blocks fuse the two streams.
        adapter_down_hidden_size (`int`, *optional*):
            Hidden width of the down-projecting MLP (hidden -> latent). Defaults to `latent_dim`.
        adapter_up_hidden_size (`int`, *optional*):
            Hidden width of the up-projecting MLP (latent -> hidden). Defaults to the backbone's hidden size.
        cross_attention_heads (`int`, *optional*, defaults to 4):
            Number of heads of the multi-head cross-attention in the latent space.
        glia_layers (`list[int]`, *optional*):
            Indices of the backbone blocks that get a GLIA block in front of them. Defaults to all blocks.
        lambda_init (`float`, *optional*, defaults to 1.0):
            Initial value of the learnable residual scales `lambda_d` (LGF) and `lambda_s` (GLR).
        lambda_shape (`str`, *optional*, defaults to `"scalar"`):
            `"scalar"` for one learnable number per GLIA block and scale, `"vector"` for one per latent channel.
        use_lgf (`bool`, *optional*, defaults to `True`):
            Use the Local-Global Fusion cross-attention (paper Eq. 3). When `False`, the adapter still injects
            `up(down(x))` into the main stream, without looking at the prior.
        use_glr (`bool`, *optional*, defaults to `True`):
            Use the Global-Local Refine cross-attention (paper Eq. 4). When `False`, the prior stays as projected.
        main_stream (`str`, *optional*, defaults to `"detail"`):
            Stream that runs through the adapted blocks and is scored: `"detail"` or `"semantic"`.
        guidance_stream (`str`, *optional*, defaults to `"semantic"`):
            Stream whose projected tokens form the prior: `"semantic"` or `"detail"`.
        freeze_backbone (`bool`, *optional*, defaults to `True`):
            Keep the ViT frozen. GLIANet always does; the full fine-tuning baseline does not.
        head_dropout (`float`, *optional*, defaults to 0.1):
            Dropout in front of the linear regression head.
        loss (`str`, *optional*, defaults to `"plcc"`):
            Training loss on normalised labels: `"plcc"` (1 - Pearson correlation over the batch, as LoDa), `"mse"`
            or `"l1"`.
        score_min (`float`, *optional*, defaults to 0.0), score_max (`float`, *optional*, defaults to 1.0):
            Range of the data set's scores (higher is better). Labels are normalised to [0, 1] with it for training,
            and predictions are mapped back so that `score` is on the data set's own scale.
        score_name (`str`, *optional*, defaults to `"normalised score"`):
            What the score is, e.g. `"KonIQ-10k MOS (1-5)"`.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal used to initialise the new weights.
    """

    model_type = "glia"
    sub_configs = {"backbone_config": ViTConfig}

    def __init__(
        self,
        backbone_config: ViTConfig | dict | None = None,
        image_size: int | None = None,
        grid_size: tuple[int, int] | list[int] = (7, 7),
        fragment_size: tuple[int, int] | list[int] = (32, 32),
        latent_dim: int = 64,
        adapter_down_hidden_size: int | None = None,
        adapter_up_hidden_size: int | None = None,
        cross_attention_heads: int = 4,
        glia_layers: list[int] | None = None,
        lambda_init: float = 1.0,
        lambda_shape: str = "scalar",
        use_lgf: bool = True,
        use_glr: bool = True,
        main_stream: str = "detail",
        guidance_stream: str = "semantic",
        freeze_backbone: bool = True,
        head_dropout: float = 0.1,
        loss: str = "plcc",
        score_min: float = 0.0,
        score_max: float = 1.0,
        score_name: str = "normalised score",
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if backbone_config is None:
            backbone_config = ViTConfig()
        elif isinstance(backbone_config, dict):
            backbone_config = ViTConfig(**{k: v for k, v in backbone_config.items() if k != "model_type"})
        self.backbone_config = backbone_config
        self.image_size = image_size if image_size is not None else _as_pair(backbone_config.image_size)[0]
        self.grid_size = list(_as_pair(grid_size))
        self.fragment_size = list(_as_pair(fragment_size))
        self.latent_dim = latent_dim
        self.adapter_down_hidden_size = adapter_down_hidden_size or latent_dim
        self.adapter_up_hidden_size = adapter_up_hidden_size or backbone_config.hidden_size
        self.cross_attention_heads = cross_attention_heads
        num_layers = backbone_config.num_hidden_layers
        self.glia_layers = sorted(set(glia_layers)) if glia_layers is not None else list(range(num_layers))
        self.lambda_init = lambda_init
        self.lambda_shape = lambda_shape
        self.use_lgf = use_lgf
        self.use_glr = use_glr
        self.main_stream = main_stream
        self.guidance_stream = guidance_stream
        self.freeze_backbone = freeze_backbone
        self.head_dropout = head_dropout
        self.loss = loss
        self.score_min = float(score_min)
        self.score_max = float(score_max)
        self.score_name = score_name
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        self.validate_glia()

    @property
    def fragment_image_size(self) -> tuple[int, int]:
        """Height and width of the tiled fragment image, `grid_size * fragment_size`."""
        return (self.grid_size[0] * self.fragment_size[0], self.grid_size[1] * self.fragment_size[1])

    def validate_glia(self) -> None:
        """Raise a `ValueError` naming the first inconsistent setting."""
        backbone_size = _as_pair(self.backbone_config.image_size)
        patch = _as_pair(self.backbone_config.patch_size)
        if any(n < 1 for n in self.grid_size) or any(f < 1 for f in self.fragment_size):
            raise ValueError(f"grid_size {self.grid_size} and fragment_size {self.fragment_size} must be positive.")
        if self.fragment_image_size != backbone_size:
            raise ValueError(
                f"The fragments do not fit the backbone: grid_size {tuple(self.grid_size)} x fragment_size "
                f"{tuple(self.fragment_size)} tiles a {self.fragment_image_size} image, but the backbone takes "
                f"{backbone_size} inputs."
            )
        if self.fragment_size[0] % patch[0] or self.fragment_size[1] % patch[1]:
            raise ValueError(
                f"fragment_size {tuple(self.fragment_size)} must be a multiple of the backbone's patch size {patch}, "
                "so that no ViT patch straddles two fragments."
            )
        if (self.image_size, self.image_size) != backbone_size:
            raise ValueError(f"image_size {self.image_size} must equal the backbone's input size {backbone_size}.")
        if self.latent_dim % self.cross_attention_heads:
            raise ValueError(
                f"latent_dim ({self.latent_dim}) must be divisible by cross_attention_heads "
                f"({self.cross_attention_heads})."
            )
        num_layers = self.backbone_config.num_hidden_layers
        bad = [i for i in self.glia_layers if not 0 <= i < num_layers]
        if bad:
            raise ValueError(f"glia_layers {bad} are not blocks of a {num_layers}-block backbone.")
        for name, value, allowed in (
            ("main_stream", self.main_stream, STREAMS),
            ("guidance_stream", self.guidance_stream, STREAMS),
            ("loss", self.loss, LOSSES),
            ("lambda_shape", self.lambda_shape, LAMBDA_SHAPES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
        if not self.score_max > self.score_min:
            raise ValueError(f"score_max ({self.score_max}) must be greater than score_min ({self.score_min}).")


def _as_pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


__all__ = ["GLIAConfig"]
