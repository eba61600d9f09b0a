"""Modules that the adapter and VPT methods wrap around parts of a frozen backbone block (any family in backbones.py).

Every wrapper keeps the wrapped module as `base_layer` and calls it unchanged, so the frozen weights stay where they
were (one level deeper in the parameter names) and `GLIAModel`'s block loop needs no change.
"""

import math

import torch
from torch import nn


class BottleneckAdapter(nn.Module):
    """`up(dropout(act(down(x))))`: a hidden -> bottleneck -> hidden MLP whose up-projection starts at zero.

    With the zero up-projection the adapter outputs exactly zero at initialisation, so a model with adapters first
    computes what the frozen model computes.
    """

    def __init__(self, hidden_size: int, bottleneck: int, activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.activation = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.activation(self.down(hidden_states))))


class SequentialAdapter(nn.Module):
    """Houlsby placement: `h = base_layer(x); return h + adapter(h)`.

    Wrapped around a sub-layer's last projection (attention `o_proj`, MLP `fc2`), the adapter sits after the sub-layer
    and before the ViT block adds its residual.
    """

    def __init__(self, base_layer: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        output = self.base_layer(hidden_states)
        return output + self.adapter(output)


class ParallelAdapter(nn.Module):
    """AdaptFormer placement: `base_layer(x) + scale * adapter(x)`, wrapped around a block's MLP.

    The adapter reads the MLP's input (the layer-normed tokens after attention). `scale` is a learnable scalar or a
    fixed buffer.
    """

    def __init__(self, base_layer: nn.Module, adapter: BottleneckAdapter, scale: float, learnable_scale: bool = True):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter
        scale = torch.tensor(float(scale))
        if learnable_scale:
            self.adapter_scale = nn.Parameter(scale)
        else:
            self.register_buffer("adapter_scale", scale)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.base_layer(hidden_states) + self.adapter_scale * self.adapter(hidden_states)


def vpt_init_bound(patch_size: tuple[int, int], hidden_size: int, num_channels: int = 3) -> float:
    """Bound of VPT's uniform prompt initialisation: Xavier-uniform with the patch embedding's fan-in as fan-in."""
    return math.sqrt(6.0 / float(num_channels * patch_size[0] * patch_size[1] + hidden_size))


class PromptedViTLayer(nn.Module):
    """A backbone block with its own `num_prompts` learnable tokens (deep visual prompt tuning).

    Before the block, the prompts go in right after the `num_leading_tokens` special tokens (CLS; CLS and
    distillation for DeiT; CLS and registers for DINOv2 with registers; none for SigLIP): `[special, P, patches]`.
    After it, the prompt positions are dropped again: `[special, patches]`. The token count seen by the rest of the
    model never changes, so GLIA blocks, the final norm and the head are unaware of the prompts.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        num_prompts: int,
        hidden_size: int,
        init_bound: float,
        dropout: float = 0.0,
        num_leading_tokens: int = 1,
    ):
        super().__init__()
        self.base_layer = base_layer
        self.num_prompts = num_prompts
        self.num_leading_tokens = num_leading_tokens
        self.prompts = nn.Parameter(torch.empty(num_prompts, hidden_size).uniform_(-init_bound, init_bound))
        self.prompt_dropout = nn.Dropout(dropout)

    @property
    def attention(self) -> nn.Module:
        """The wrapped block's self-attention, so that hooks on `layer.attention` keep working.

        Its attention maps then cover `1 + num_prompts + patches` tokens, prompts included.
        """
        return self.base_layer.attention

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        prompts = self.prompt_dropout(self.prompts).to(hidden_states.dtype)
        prompts = prompts.unsqueeze(0).expand(hidden_states.shape[0], -1, -1)
        lead = self.num_leading_tokens
        prompted = torch.cat([hidden_states[:, :lead], prompts, hidden_states[:, lead:]], dim=1)
        output = self.base_layer(prompted, *args, **kwargs)
        return torch.cat([output[:, :lead], output[:, lead + self.num_prompts :]], dim=1)


__all__ = ["BottleneckAdapter", "SequentialAdapter", "ParallelAdapter", "PromptedViTLayer", "vpt_init_bound"]
