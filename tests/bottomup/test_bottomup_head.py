"""The HigherHRNet head: output shapes, and its analytic cost equal to a hook count of a real
forward, in the paper's unit; on HRNet it reproduces HigherHRNet's published sizes."""
from __future__ import annotations

import pytest
import torch

from pipeline.bottomup.head import HigherHead, head_cost
from pipeline.cost import GIGA, Cost, count_forward, profile
from pipeline.space.sample import hrnet


@pytest.mark.parametrize("channels,deconv,blocks,hw", [
    (8, None, 4, (16, 12)), (8, 12, 2, (8, 8)), (16, None, 0, (10, 6))])
def test_shapes_and_cost_equal_hook_count(channels, deconv, blocks, hw):
    torch.manual_seed(0)
    head = HigherHead(channels, deconv_channels=deconv, num_blocks=blocks)
    x = torch.randn(2, channels, *hw)
    first, second = head(x)
    assert first.shape == (2, 34, *hw)
    assert second.shape == (2, 17, 2 * hw[0], 2 * hw[1])
    measured = count_forward(head, x[:1])
    assert measured == Cost(*head_cost(channels, hw[0] * hw[1], deconv_channels=deconv,
                                       num_blocks=blocks))
    assert measured.params == sum(p.numel() for p in head.parameters())


@pytest.mark.parametrize("width,size,params,gmacs", [(32, 512, 28_645_331, 47.9),
                                                     (48, 640, 63_827_139, 154.3)])
def test_higher_hrnet_published_size(width, size, params, gmacs):
    """HRNet's body with this head in place of the top-down one is HigherHRNet: 28.6M / 47.9 at
    W32-512 and 63.8M / 154.3 at W48-640 as published, whose "GFLOPs" are MACs / 1e9 with the
    transposed conv counted at every output position (the official counter's rule)."""
    body = profile(hrnet("pose"), "pose", width, (size, size))
    pos = (size // 4) ** 2
    topdown = (width * 17 + 17, width * 17 * pos)
    hp, hm = head_cost(width, pos)
    macs = body.macs - topdown[1] + hm
    assert body.params - topdown[0] + hp == params
    assert round(macs / 1e9, 1) == gmacs
    assert macs / GIGA == pytest.approx(gmacs * 1e9 / GIGA, abs=0.05)


def test_bad_shape_rejected():
    with pytest.raises(ValueError, match="bad head shape"):
        HigherHead(0)
