"""BN calibration equals the exact statistics of each BN input, computed independently."""
import numpy as np
import pytest
import torch

from pipeline.nets.export import export_subnet
from pipeline.nets.supernet import SuperNet
from pipeline.nets.calibrate import (CalibrationError, CalibrationSet, bn_layers,
                                       calibration_indices)
from pipeline.space.sample import sample_arch


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = SuperNet("seg", 8, seed=1)
    images = torch.randn(6, 3, 64, 64) * 0.5 + 0.1
    calib = CalibrationSet.from_images(list(range(6)), images, batch_size=4)  # batches of 4 and 2
    archs = [sample_arch(np.random.default_rng(s), p, d, "seg")
             for s, p, d in [(0, 0.5, (2, 3)), (1, 0.8, (4, 5))]]
    return net, calib, archs


def independent_stats(standalone, batches):
    """Mean and unbiased variance of every BN input, from the raw tensors (float64)."""
    seen = {}
    hooks = [m.register_forward_pre_hook(
        lambda mod, inp, n=n: seen.setdefault(n, []).append(inp[0].detach().double().clone()))
        for n, m in bn_layers(standalone).items()]
    standalone.train()
    with torch.no_grad():
        for b in batches:
            standalone(b)
    for h in hooks:
        h.remove()
    out = {}
    for n, xs in seen.items():
        flat = torch.cat([x.transpose(0, 1).reshape(x.shape[1], -1) for x in xs], 1)
        out[n] = (flat.mean(1), flat.var(1, unbiased=True))
    return out


def test_calibration_matches_exported_subnet(setup):
    net, calib, archs = setup
    for arch in archs:
        net.set_arch(arch)
        calib.calibrate(net)
        calibrated = export_subnet(net)          # carries the calibrated statistics
        fresh = export_subnet(net)               # an independent copy to measure on
        ref = independent_stats(fresh, calib.batches)
        layers = bn_layers(calibrated)
        assert set(ref) == set(layers)           # every BN of the subnet executed
        for name, (mean, var) in ref.items():
            bn = layers[name]
            torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-6)


def test_calibration_is_order_independent_and_in_place(setup):
    net, calib, archs = setup
    ptrs = {n: m.running_mean.data_ptr() for n, m in bn_layers(net).items()}
    net.eval()
    net.set_arch(archs[0])
    calib.calibrate(net)
    first = {n: m.running_var.clone() for n, m in bn_layers(export_subnet(net)).items()}
    net.set_arch(archs[1])
    calib.calibrate(net)
    net.set_arch(archs[0])
    calib.calibrate(net)
    again = {n: m.running_var for n, m in bn_layers(export_subnet(net)).items()}
    for n in first:
        torch.testing.assert_close(again[n], first[n], rtol=0, atol=0)
    assert {n: m.running_mean.data_ptr() for n, m in bn_layers(net).items()} == ptrs
    assert not net.training  # the mode is restored after the training-mode pass


def test_indices_fixed_and_checked():
    assert calibration_indices(50, 5, seed=3) == calibration_indices(50, 5, seed=3)
    assert len(set(calibration_indices(50, 5, seed=3))) == 5
    with pytest.raises(CalibrationError, match="calibration.images = 9 exceeds the 8 images of the train split"):
        calibration_indices(8, 9, seed=0)
