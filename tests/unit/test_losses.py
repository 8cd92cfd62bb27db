"""Loss logic on tiny tensors: values, signs of gradients, fp32 under bf16 inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medsynth.errors import ConfigError
from medsynth.training.losses import LossKind, d_loss, d_prob, g_loss
from medsynth.training.train_config import load_train_config


def test_ns_matches_bce_of_pytorch_examples() -> None:
    r, f = torch.randn(8), torch.randn(8)
    bce = F.binary_cross_entropy(torch.sigmoid(r), torch.ones(8)) + F.binary_cross_entropy(torch.sigmoid(f), torch.zeros(8))
    assert torch.allclose(d_loss(LossKind.NS, r, f), bce, atol=1e-5)
    assert torch.allclose(g_loss(LossKind.NS, f), F.binary_cross_entropy(torch.sigmoid(f), torch.ones(8)), atol=1e-5)


def test_at_zero_logits() -> None:
    z = torch.zeros(4)
    assert math.isclose(float(d_loss(LossKind.NS, z, z)), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(float(d_loss(LossKind.HINGE, z, z)), 2.0)
    assert float(g_loss(LossKind.HINGE, z)) == 0.0
    assert d_prob(z) == 0.5


def test_hinge_saturates_outside_margin() -> None:
    # confident and correct D: zero hinge loss and zero gradient
    r = torch.full((4,), 2.0, requires_grad=True)
    f = torch.full((4,), -2.0, requires_grad=True)
    loss = d_loss(LossKind.HINGE, r, f)
    loss.backward()
    assert float(loss) == 0.0 and float(r.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("kind", list(LossKind))
def test_gradient_signs(kind: LossKind) -> None:
    r = torch.zeros(4, requires_grad=True)
    f = torch.zeros(4, requires_grad=True)
    d_loss(kind, r, f).backward()
    assert (r.grad < 0).all() and (f.grad > 0).all()  # D raises real logits, lowers fake ones
    f2 = torch.zeros(4, requires_grad=True)
    g_loss(kind, f2).backward()
    assert (f2.grad < 0).all()  # G raises D's logit on its fakes


def test_losses_are_fp32_for_bf16_logits() -> None:
    r = torch.randn(8).bfloat16()
    assert d_loss(LossKind.NS, r, r).dtype == torch.float32


def test_unknown_loss_lists_valid() -> None:
    with pytest.raises(ConfigError, match="valid: ns, hinge"):
        load_train_config({"train": {"loss": "wgan"}})


def test_profiles_and_explicit_keys() -> None:
    cfg = load_train_config({"train": {"profile": "smoke", "ngf": 24}})
    assert cfg.max_steps == 25 and cfg.ngf == 24  # explicit key wins over the profile
    with pytest.raises(ConfigError, match="valid: custom, smoke, demo, full"):
        load_train_config({"train": {"profile": "huge"}})
    with pytest.raises(ConfigError, match="unknown policy 'rotate'"):
        load_train_config({"train": {"diffaugment": ["rotate"]}})
    with pytest.raises(ConfigError, match="unknown key"):
        load_train_config({"train": {"epoch": 3}})


def test_mode_seeking_loss_punishes_a_generator_that_ignores_z() -> None:
    from medsynth.training.losses import mode_seeking_loss

    z1, z2 = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), torch.randn(8, 16)
    same = torch.rand(8, 1, 4, 4)
    apart = same + 0.5 * torch.randn(8, 1, 4, 4)
    collapsed, diverse = mode_seeking_loss(same, same, z1, z2), mode_seeking_loss(same, apart, z1, z2)
    assert collapsed > 1e4 and diverse < 10  # 1/eps when the two z give one image
    # its gradient pushes the two images apart
    x2 = (same + 0.1).requires_grad_(True)
    mode_seeking_loss(same, x2, z1, z2).backward()
    step = -x2.grad  # gradient descent direction
    assert ((x2 + 1e-3 * step.sign()) - same).abs().mean() > (x2 - same).abs().mean()
    assert mode_seeking_loss(same.bfloat16(), apart.bfloat16(), z1, z2).dtype == torch.float32
