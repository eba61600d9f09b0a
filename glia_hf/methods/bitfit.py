"""BitFit (Ben Zaken, Ravfogel and Goldberg, 2022): only the backbone's bias terms and the head train.

A standard parameter-efficient baseline that paper Table 6 lacks (our addition). Every bias of the backbone trains:
those of the attention projections, the MLP and the layer norms, in every block and in the embeddings. Nothing is
added to the model, so it exports with `save_pretrained` like GLIANet and loads through `AutoModel`; its
`config.json` records `"method": {"name": "bitfit", ...}` and `glia_hf.methods.load_model` trains the biases again.

The backbone is not frozen in the configuration (`freeze_backbone=False`): gradients must flow through it to reach
its biases, while its weights keep `requires_grad=False`.
"""

from .registry import MethodSpec, register_method


#: Qualified names of the backbone's bias parameters (e.g. `glia.vit.encoder.layer.3.attention.attention.query.bias`).
BACKBONE_BIAS = r"^glia\.vit\..*\.bias$"

BITFIT = register_method(MethodSpec(
    name="bitfit",
    label="BitFit",
    description="BitFit (backbone bias terms + head)",
    glia_options={"glia_layers": [], "freeze_backbone": False},
    trainable=BACKBONE_BIAS,
    export="save_pretrained",
    paper=False,
    reference="Ben Zaken et al., 2022",
))
