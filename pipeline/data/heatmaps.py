"""Gaussian heatmap targets for top-down pose."""
from __future__ import annotations

import numpy as np


def generate_heatmaps(joints: np.ndarray, vis: np.ndarray, input_hw: tuple[int, int],
                      heatmap_hw: tuple[int, int], sigma: float = 2.0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Targets (J, h, w) float32 and weights (J, 1) for joints in input-crop pixel coords.

    Heatmap pixel i stands for input pixel i * stride (HRNet's convention). The Gaussian is centred
    on the exact sub-pixel position rather than HRNet's rounded one: the arg-max + quarter-pixel
    decoder then recovers the side of the peak, which rounding throws away. A joint is weighted 0
    when not labelled or when its 3-sigma window misses the map (as HRNet).
    """
    num = joints.shape[0]
    hh, hw = heatmap_hw
    stride_y = input_hw[0] / hh
    stride_x = input_hw[1] / hw
    target = np.zeros((num, hh, hw), dtype=np.float32)
    weight = (np.asarray(vis).reshape(num) > 0).astype(np.float32).reshape(num, 1)
    radius = sigma * 3
    xs = np.arange(hw, dtype=np.float32)
    ys = np.arange(hh, dtype=np.float32)
    for j in range(num):
        if weight[j, 0] == 0:
            continue
        mx = joints[j, 0] / stride_x
        my = joints[j, 1] / stride_y
        if mx + radius < 0 or my + radius < 0 or mx - radius >= hw or my - radius >= hh:
            weight[j, 0] = 0.0
            continue
        x0, x1 = max(0, int(np.floor(mx - radius))), min(hw, int(np.ceil(mx + radius)) + 1)
        y0, y1 = max(0, int(np.floor(my - radius))), min(hh, int(np.ceil(my + radius)) + 1)
        gx = np.exp(-((xs[x0:x1] - mx) ** 2) / (2 * sigma ** 2))
        gy = np.exp(-((ys[y0:y1] - my) ** 2) / (2 * sigma ** 2))
        target[j, y0:y1, x0:x1] = gy[:, None] * gx[None, :]
    return target, weight
