"""Networks: output shapes at every resolution, DCGAN init, conditioning, registry and bad specs."""

from __future__ import annotations

import pytest
import torch

from medsynth.errors import ConfigError
from medsynth.training.augment import diff_augment
from medsynth.training.kinds import build_models, get_kind
from medsynth.training.models import Discriminator, Generator, ModelSpec, count_params, layout


@pytest.mark.parametrize("res", [28, 32, 64])
@pytest.mark.parametrize("kind,classes", [("dcgan", 0), ("cgan", 3)])
def test_shapes_and_range(res: int, kind: str, classes: int) -> None:
    spec = ModelSpec(kind=kind, resolution=res, ngf=8, ndf=8, num_classes=classes)
    g, d = build_models(spec)
    z = torch.randn(5, spec.nz)
    y = torch.tensor([0, 1, 2, 0, 1]) if classes else None
    x = g(z, y)
    assert x.shape == (5, 1, res, res)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert d(x, y).shape == (5,)


def test_pytorch_examples_sizes() -> None:
    # the 64 px DCGAN with nz=100, ngf=ndf=64 has pytorch/examples' parameter counts for nc=1
    spec = ModelSpec()
    assert count_params(Generator(spec)) == 3_574_656
    assert count_params(Discriminator(spec)) == 2_763_520
    assert layout(28) == (7, 2) and layout(32) == (4, 3) and layout(64) == (4, 4)


def test_dcgan_init_std() -> None:
    torch.manual_seed(0)
    g = Generator(ModelSpec())
    w = g.main[0].weight
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.001
    bn = g.main[1]
    assert abs(float(bn.weight.mean()) - 1.0) < 0.01 and float(bn.bias.abs().max()) == 0.0


def test_condition_changes_output() -> None:
    torch.manual_seed(0)
    g = Generator(ModelSpec(kind="cgan", resolution=32, ngf=8, num_classes=3)).eval()
    z = torch.randn(1, 100).repeat(3, 1)
    x = g(z, torch.tensor([0, 1, 2]))
    assert not torch.allclose(x[0], x[1])  # same z, other label -> other image


def test_multi_modality_condition() -> None:
    # 7 classes over CT/MR/XR: class and modality embeddings both exist and both reach G
    spec = ModelSpec(kind="cgan", resolution=64, ngf=8, ndf=8, num_classes=7, class_modality=[0, 0, 0, 1, 2, 2, 2])
    g, d = build_models(spec)
    assert g.cond.modalities is not None and g.cond.modalities.num_embeddings == 3
    y = torch.arange(7)
    assert d(g(torch.randn(7, 100), y), y).shape == (7,)


def test_spectral_norm_discriminator_has_no_batchnorm() -> None:
    d = Discriminator(ModelSpec(kind="cgan", resolution=32, ndf=8, num_classes=2, spectral_norm=True))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    assert any(hasattr(m, "parametrizations") for m in d.modules())
    d(torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])).sum().backward()


@pytest.mark.parametrize("res", [16, 48, 128, 30])
def test_bad_resolution(res: int) -> None:
    with pytest.raises(ConfigError, match="valid: 28, 32, 64"):
        build_models(ModelSpec(resolution=res))


def test_unknown_model_lists_valid() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'stylegan'; valid: cgan, dcgan"):
        get_kind("stylegan")


def test_conditional_needs_labels() -> None:
    g = Generator(ModelSpec(kind="cgan", resolution=32, ngf=8, num_classes=2))
    with pytest.raises(ConfigError, match="labels are required"):
        g(torch.randn(2, 100))
    with pytest.raises(ConfigError, match="needs at least one class"):
        build_models(ModelSpec(kind="cgan", resolution=32))


def test_diffaugment_is_differentiable_and_seeded() -> None:
    x = (torch.rand(4, 1, 32, 32) * 2 - 1).requires_grad_(True)
    pol = ["color", "translation", "cutout"]
    a = diff_augment(x, pol, torch.Generator().manual_seed(1))
    b = diff_augment(x, pol, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # cutout blanks a half-size square (a quarter of the image, less where it crosses the border)
    c = diff_augment(torch.ones(16, 1, 32, 32), ["cutout"], torch.Generator().manual_seed(0))
    share = (c == -1).float().mean(dim=(1, 2, 3))
    assert (share > 0).all() and (share <= 0.25).all() and float(share.max()) == 0.25


@pytest.mark.parametrize("arch", ["resize", "resnet"])
@pytest.mark.parametrize("res", [28, 32, 64])
def test_other_architectures_make_every_resolution(arch, res):
    """resize-convolution and residual G/D: [-1, 1] images of the asked size, one logit per image."""
    spec = ModelSpec(kind="cgan", arch=arch, resolution=res, ngf=8, ndf=8, num_classes=3, minibatch_std=True)
    g, d = build_models(spec)
    y = torch.tensor([0, 1, 2, 0])
    x = g(torch.randn(4, spec.nz), y)
    assert x.shape == (4, 1, res, res) and float(x.abs().max()) <= 1.0
    assert d(x, y).shape == (4,)


def test_unknown_architecture_names_the_valid_ones():
    from medsynth.errors import ConfigError

    with pytest.raises(ConfigError, match="valid: dcgan, resize, resnet"):
        build_models(ModelSpec(arch="unet"))


def test_minibatch_std_by_class_sees_a_generator_that_makes_one_image_per_class():
    """Across mixed classes the spread is the difference between classes; within a class it is zero."""
    import torch

    from medsynth.training.models import Discriminator, ModelSpec, minibatch_std

    torch.manual_seed(0)
    h = torch.randn(64, 3, 2, 2)
    y = torch.randint(0, 2, (64,))
    one_per_class = torch.where(y.view(-1, 1, 1, 1) == 0, h[:1].expand_as(h), h[1:2].expand_as(h))
    mixed = minibatch_std(one_per_class)[:, -1].mean()
    by_class = minibatch_std(one_per_class, labels=y)[:, -1]
    assert mixed > 0.3  # the batch-wide statistic calls this diverse
    assert by_class.mean() < 0.1 and (by_class < 1e-3).float().mean() > 0.8  # only groups straddling a class boundary
    assert minibatch_std(h, labels=y)[:, -1].mean() > 0.5  # real spread is still seen
    assert torch.equal(minibatch_std(h, labels=y)[:, :3], h)  # features pass through in their order
    spec = ModelSpec(kind="cgan", arch="resize", resolution=32, ngf=8, ndf=8, num_classes=2, minibatch_std=True,
                     minibatch_std_by_class=True)
    logits = Discriminator(spec)(torch.randn(6, 1, 32, 32), torch.tensor([0, 1, 0, 1, 1, 0]))
    assert logits.shape == (6,) and torch.isfinite(logits).all()
