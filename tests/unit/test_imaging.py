"""medsynth/imaging.py: the one place for [-1, 1] <-> uint8, resizing and grids."""

import numpy as np
import pytest
import torch

from medsynth import imaging


def test_uint8_round_trip_is_exact_and_clipped():
    u8 = np.arange(256, dtype=np.uint8)
    assert np.array_equal(imaging.to_uint8(imaging.to_unit(u8)), u8)
    assert imaging.to_uint8(np.array([-2.0, 2.0, np.float32(-1 + 0.5 / 127.5)])).tolist() == [0, 255, 0]  # half to even
    assert np.array_equal(imaging.to_unit_tensor(torch.from_numpy(u8)).numpy(), imaging.to_unit(u8))


def test_uint8_frames_drops_the_channel_and_refuses_other_shapes():
    x = np.zeros((3, 1, 8, 8), np.float32)
    assert imaging.uint8_frames(x).shape == (3, 8, 8) and imaging.uint8_frames(x[:, 0]).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="expected"):
        imaging.uint8_frames(np.zeros(5))


@pytest.mark.parametrize(("src", "dst"), [(28, 64), (64, 28), (32, 32)])
def test_to_res_keeps_range_and_returns_same_size_unchanged(src, dst):
    x = np.random.default_rng(0).uniform(-1, 1, (2, 1, src, src)).astype(np.float32)
    y = imaging.to_res(x, dst)
    assert y.shape == (2, 1, dst, dst) and y.min() >= -1 and y.max() <= 1
    assert (y is x) == (src == dst)


def test_make_grid_layout_fill_and_scale():
    x = np.ones((5, 1, 4, 4), np.float32)
    g = imaging.make_grid(x)  # 3 x 2 grid, black padding
    assert g.shape == (2 * 6 + 2, 3 * 6 + 2) and g[0, 0] == 0 and g[2, 2] == 255
    w = imaging.make_grid(-x, cols=5, fill=255, scale=2)
    assert w.shape == (2 * (6 + 2), 2 * (5 * 6 + 2)) and w[0, 0] == 255 and w[4, 4] == 0


def test_coarse_view_keeps_layout_drops_grain_and_leaves_small_images_alone():
    import numpy as np

    from medsynth.imaging import coarse_view

    rng = np.random.default_rng(0)
    x = np.clip(np.linspace(-1, 1, 64)[None, None, None, :] + rng.normal(0, 0.1, (2, 1, 64, 64)), -1, 1)
    x = x.astype(np.float32)
    v = coarse_view(x, 16)
    assert v.shape == x.shape and v.dtype == np.float32
    assert np.abs(v - x).mean() > 0.02  # the grain is gone
    assert np.abs(v.mean(axis=(1, 2)) - x.mean(axis=(1, 2))).max() < 0.05  # the left-to-right ramp stays
    small = x[..., :16, :16].copy()
    assert coarse_view(small, 16) is small and coarse_view(small, 32) is small  # not larger: unchanged
