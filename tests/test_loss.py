"""The training losses (`quality_loss`) and the float32 head, scores and loss under bfloat16 autocast."""

import pytest
import torch

from glia_hf import GLIAConfig, GLIAForImageQualityAssessment, quality_loss
from glia_hf.configuration_glia import LOSSES
from tests.conftest import random_inputs, tiny_vit_config


def pearson(x, y):
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return float((x * y).sum() / (x.norm() * y.norm()))


def loda_form_reference(predictions, targets):
    """LoDa's plcc_loss as its source describes it, written out here step by step in float64.

    Both vectors standardised with the population standard deviation (+1e-8), then the mean of
    mse(p, t) / 4 and mse(rho * p, t) / 4 with rho = mean(p * t).
    """
    p, t = predictions.double(), targets.double()
    p = (p - p.mean()) / (((p - p.mean()) ** 2).mean().sqrt() + 1e-8)
    t = (t - t.mean()) / (((t - t.mean()) ** 2).mean().sqrt() + 1e-8)
    rho = (p * t).mean()
    first = ((p - t) ** 2).mean() / 4
    second = ((rho * p - t) ** 2).mean() / 4
    return (first + second) / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loda_plcc_matches_the_written_out_form_and_the_closed_form_in_r(seed):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.rand(32, generator=generator)
    predictions = 0.3 * targets + 0.2 * torch.rand(32, generator=generator) + 0.1  # correlated, other scale
    loss = quality_loss(predictions, targets, "loda_plcc")
    r = pearson(predictions, targets)
    closed_form = ((1 - r) / 2 + (1 - r**2) / 4) / 2
    assert loss.item() == pytest.approx(float(loda_form_reference(predictions, targets)), abs=1e-6)
    assert loss.item() == pytest.approx(closed_form, abs=1e-6)
    # `plcc` keeps its meaning, (1 - r) / 2, and the two differ for any r other than 1.
    assert quality_loss(predictions, targets, "plcc").item() == pytest.approx((1 - r) / 2, abs=1e-6)
    assert abs(loss.item() - (1 - r) / 2) > 1e-3


def test_loda_plcc_gradient_is_the_plcc_gradient_scaled_by_one_plus_r_over_two():
    generator = torch.Generator().manual_seed(3)
    targets = torch.rand(16, generator=generator)
    base = 0.5 * targets + 0.3 * torch.rand(16, generator=generator)
    gradients = {}
    for kind in ("plcc", "loda_plcc"):
        predictions = base.clone().requires_grad_(True)
        quality_loss(predictions, targets, kind).backward()
        gradients[kind] = predictions.grad
    r = pearson(base, targets)
    torch.testing.assert_close(gradients["loda_plcc"], gradients["plcc"] * (1 + r) / 2, rtol=1e-4, atol=1e-7)


def test_correlation_losses_ignore_scale_and_offset_and_fall_back_to_mse_for_one_sample():
    targets = torch.tensor([0.1, 0.5, 0.3, 0.9])
    for kind, at_minus_one in (("plcc", 1.0), ("loda_plcc", 0.5)):  # r = -1: (1 + 1) / 2, ((1 + 1) / 2 + 0) / 2
        assert quality_loss(3 * targets + 2, targets, kind).item() == pytest.approx(0.0, abs=1e-6)
        assert quality_loss(-targets, targets, kind).item() == pytest.approx(at_minus_one, abs=1e-6)
        one = quality_loss(torch.tensor([0.2]), torch.tensor([0.5]), kind)
        assert one.item() == pytest.approx(0.09, abs=1e-7)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="loda_plcc"):
        quality_loss(torch.zeros(2), torch.zeros(2), "pearson")
    assert {"plcc", "loda_plcc", "mse", "l1"} == set(LOSSES)
    with pytest.raises(ValueError, match="loss must be one of"):
        GLIAConfig(backbone_config=tiny_vit_config(), loss="pearson")


def test_training_config_takes_its_loss_names_from_the_model_configuration():
    from training.config import ConfigError, TrainConfig

    config = TrainConfig()
    config.optim.loss = "loda_plcc"
    config.validate()
    config.optim.loss = "pearson"
    with pytest.raises(ConfigError, match="loda_plcc"):
        config.validate()


@pytest.mark.parametrize("kind", LOSSES)
def test_losses_are_float32_for_bfloat16_inputs(kind):
    predictions = torch.linspace(0.2, 0.8, 8, dtype=torch.bfloat16)
    targets = torch.linspace(0.1, 0.9, 8, dtype=torch.bfloat16).flip(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert quality_loss(predictions, targets, kind).dtype == torch.float32


@pytest.mark.parametrize("kind", ["plcc", "loda_plcc"])
def test_head_scores_and_loss_are_float32_under_bfloat16_autocast(kind):
    torch.manual_seed(0)
    model = GLIAForImageQualityAssessment(
        GLIAConfig(backbone_config=tiny_vit_config(), latent_dim=16, score_min=1.0, score_max=5.0, loss=kind)
    ).eval()
    # Scores near 4 that differ by less than bfloat16's step there (1/32): in bfloat16 they would tie.
    with torch.no_grad():
        model.regressor.weight.normal_(std=1e-3)
        model.regressor.bias.fill_(0.75)
    inputs = random_inputs(batch=24, seed=1)
    labels = torch.linspace(1.5, 4.5, 24)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**inputs, labels=labels)
    assert output.score.dtype == torch.float32 and output.normalized_score.dtype == torch.float32
    assert output.loss.dtype == torch.float32
    assert (output.score - 4).abs().max() < 1 / 32
    assert output.score.unique().numel() == 24  # every image keeps its own score
    assert output.score.to(torch.bfloat16).unique().numel() <= 3  # what a bfloat16 score would have kept
