"""Configuration of GLIANet, the Global-Local Interaction Adapter model for blind image quality assessment."""

from transformers import AutoConfig, PreTrainedConfig, ViTConfig
from transformers.utils import logging

from .backbones import backbone_config_from, backbone_spec, default_fragments
from .pipeline_glia import PIPELINE_TASK, ImageQualityAssessmentPipeline


logger = logging.get_logger(__name__)


STREAMS = ("semantic", "detail")
# Training losses on normalised labels (see `quality_loss` in modeling_glia.py for the formulas). Defined here once:
# the training configuration imports this tuple.
LOSSES = ("plcc", "loda_plcc", "mse", "l1")
LAMBDA_SHAPES = ("scalar", "vector")


class GLIAConfig(PreTrainedConfig):
    r"""
    Configuration of a [`GLIAForImageQualityAssessment`]. It holds the configuration of the frozen ViT backbone and
    everything GLIANet adds around it: the two input streams, the GLIA blocks, the regression head and the score scale.

    The two streams seen by the model:

    - the *semantic* stream: the whole image resized to `image_size` (`pixel_values`);
    - the *detail* stream: a `grid_size` grid of `fragment_size` full-resolution fragments tiled into one image
      (`fragment_values`).

    One stream is the *main* stream (it runs through the adapted backbone blocks and its readout token is scored: the
    CLS token for most families, see `backbones.py`), the other is the *guidance* stream (its final tokens, projected
    to `latent_dim`, are the prior that the GLIA blocks attend to).
    The paper's design is guidance = semantic, main = detail; the other combinations are the ablations of its Table 5.

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            Configuration of the backbone: a `ViTConfig`, `DeiTConfig`, `Dinov2Config`, `Dinov2WithRegistersConfig`,
            `CLIPVisionConfig` or `SiglipVisionConfig` (a `CLIPConfig` / `SiglipConfig` stands for its vision tower),
            or a dict of its fields whose `model_type` picks the family (no `model_type`: ViT, as in `config.json`
            files written before other families existed). Defaults to ViT-B/16 at 224 px. Where each family keeps its
            embeddings, blocks, norms and readout token is described in `backbones.py`.
        image_size (`int`, *optional*):
            Side of the input of both streams (the resized whole image; the tiled fragments). Leave it out (`None`)
            for the family's input size: the backbone's `image_size`, the only one ViT, DeiT, CLIP and SigLIP accept
            (another value is an error naming both), and 224 by default for DINOv2 (whose configs state 518), which
            takes any multiple of its patch size and interpolates its position embeddings. Always set after
            construction and saved in `config.json`, which the image processor and the pipeline read.
        grid_size (`tuple[int, int]`, *optional*):
            Number of grid cells `(nh, nw)` of the fragment sampler. Defaults to the grid of `fragment_size` cells
            that tiles `image_size`.
        fragment_size (`tuple[int, int]`, *optional*):
            Size `(fh, fw)` of each fragment in pixels. `grid_size * fragment_size` must equal `image_size` and each
            fragment must hold a whole number of patches. Defaults to the multiple of the patch size nearest to 32
            that tiles `image_size`: 7 x 7 fragments of 32 px for 16-px patches at 224, 8 x 8 of 28 px for DINOv2's
            14-px patches at 224.
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
            GLR only refines the prior and only LGF reads it, so with `use_lgf=False` it has nothing to act on: such a
            config is accepted (older commands set `use_lgf=False` and leave `use_glr` at its default), a warning says
            so once, and the read-only attribute `glr_active` (saved in `config.json`) records whether GLR is built.
        main_stream (`str`, *optional*, defaults to `"detail"`):
            Stream that runs through the adapted blocks and is scored: `"detail"` or `"semantic"`.
        guidance_stream (`str`, *optional*, defaults to `"semantic"`):
            Stream whose projected tokens form the prior: `"semantic"` or `"detail"`.
        freeze_backbone (`bool`, *optional*, defaults to `True`):
            Keep the backbone frozen. GLIANet always does; the full fine-tuning baseline does not.
        head_dropout (`float`, *optional*, defaults to 0.1):
            Dropout in front of the linear regression head.
        loss (`str`, *optional*, defaults to `"plcc"`):
            Training loss on normalised labels: `"plcc"` (`(1 - r) / 2`, `r` the Pearson correlation over the batch),
            `"loda_plcc"` (the form of LoDa's `plcc_loss`, equal to `((1 - r) / 2 + (1 - r^2) / 4) / 2`: same optimum,
            other gradient weighting), `"mse"` or `"l1"`. The loss and the scores are computed in float32.
        score_min (`float`, *optional*, defaults to 0.0), score_max (`float`, *optional*, defaults to 1.0):
            Range of the data set's scores (higher is better). Labels are normalised to [0, 1] with it for training,
            and predictions are mapped back so that `score` is on the data set's own scale.
        score_name (`str`, *optional*, defaults to `"normalised score"`):
            What the score is, e.g. `"KonIQ-10k MOS (1-5)"`.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal used to initialise the new weights.
        image_mean (`list[float]`, *optional*), image_std (`list[float]`, *optional*):
            The backbone's input normalisation, when known (`from_backbone` records it); an image processor built
            with `GLIAImageProcessor.from_config` uses it unless given another.
        method (`dict`, *optional*):
            The fine-tuning method that made the model, as `glia_hf.methods.build_model` records it:
            `{"name": "lora", "options": {"r": 8, ...}, "merged": true}` (`merged`: the method's modules were folded
            into the backbone for export). `None` for a model built without `glia_hf.methods` or saved before the
            field existed. Only recorded here; `glia_hf.methods.load_model` acts on it.
    """

    model_type = "glia"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: PreTrainedConfig | dict | None = None,
        image_size: int | None = None,
        grid_size: tuple[int, int] | list[int] | None = None,
        fragment_size: tuple[int, int] | list[int] | None = None,
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
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        method: dict | None = None,
        **kwargs,
    ):
        backbone_config = backbone_config_from(backbone_config if backbone_config is not None else ViTConfig())
        self.backbone_config = backbone_config
        spec = backbone_spec(backbone_config)
        self.image_size = spec.resolve_image_size(backbone_config, image_size)
        if grid_size is None or fragment_size is None:
            grid, fragment = default_fragments(self.image_size, _as_pair(backbone_config.patch_size)[0])
            if fragment_size is None:
                fragment_size = (fragment, fragment) if grid_size is None else _fit(self.image_size, grid_size)
            if grid_size is None:
                grid_size = _fit(self.image_size, fragment_size)
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
        kwargs.pop("glr_active", None)  # derived, saved for readers of config.json; recomputed here
        self.glr_active = bool(use_glr and use_lgf)
        if use_glr and not use_lgf:
            logger.warning_once(
                "use_glr=True has no effect with use_lgf=False: only Local-Global Fusion reads the prior that "
                "Global-Local Refine updates, so no GLR step is built (config.glr_active = False)."
            )
        self.main_stream = main_stream
        self.guidance_stream = guidance_stream
        self.freeze_backbone = freeze_backbone
        self.head_dropout = head_dropout
        self.loss = loss
        self.score_min = float(score_min)
        self.score_max = float(score_max)
        self.score_name = score_name
        self.initializer_range = initializer_range
        self.image_mean = list(image_mean) if image_mean is not None else None
        self.image_std = list(image_std) if image_std is not None else None
        if method is not None and not (isinstance(method, dict) and isinstance(method.get("name"), str)):
            raise ValueError(f"method must be a dict with a 'name' (and 'options', 'merged'), got {method!r}.")
        self.method = dict(method) if method is not None else None
        # The pipeline entry that `pipeline(PIPELINE_TASK, model=directory, trust_remote_code=True)` reads, in the form
        # transformers' `Pipeline.save_pretrained` writes: every config.json names the pipeline, and the relative import
        # above makes transformers save pipeline_glia.py beside this file.
        impl = f"{ImageQualityAssessmentPipeline.__module__.rsplit('.', 1)[-1]}.{ImageQualityAssessmentPipeline.__name__}"
        pipeline_entry = {"impl": impl, "pt": ["AutoModel"], "type": "image"}
        kwargs["custom_pipelines"] = {PIPELINE_TASK: pipeline_entry, **(kwargs.get("custom_pipelines") or {})}
        super().__init__(**kwargs)
        self.validate_glia()

    @property
    def fragment_image_size(self) -> tuple[int, int]:
        """Height and width of the tiled fragment image, `grid_size * fragment_size`."""
        return (self.grid_size[0] * self.fragment_size[0], self.grid_size[1] * self.fragment_size[1])

    def validate_glia(self) -> None:
        """Raise a `ValueError` naming the first inconsistent setting."""
        input_size = (self.image_size, self.image_size)
        patch = _as_pair(self.backbone_config.patch_size)
        if any(n < 1 for n in self.grid_size) or any(f < 1 for f in self.fragment_size):
            raise ValueError(f"grid_size {self.grid_size} and fragment_size {self.fragment_size} must be positive.")
        if self.fragment_image_size != input_size:
            raise ValueError(
                f"The fragments do not fit the backbone: grid_size {tuple(self.grid_size)} x fragment_size "
                f"{tuple(self.fragment_size)} tiles a {self.fragment_image_size} image, but the backbone takes "
                f"{input_size} inputs (image_size {self.image_size})."
            )
        if self.fragment_size[0] % patch[0] or self.fragment_size[1] % patch[1]:
            raise ValueError(
                f"fragment_size {tuple(self.fragment_size)} must be a multiple of the backbone's patch size {patch}, "
                "so that no patch straddles two fragments."
            )
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


def _fit(image_size: int, size) -> tuple[int, int]:
    """The other factor of `image_size` given a grid or a fragment size (validation reports a remainder)."""
    first, second = _as_pair(size)
    return (max(1, image_size // first), max(1, image_size // second))


def _as_pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


__all__ = ["GLIAConfig", "LOSSES"]
