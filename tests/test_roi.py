"""RoIPool and RoIAlign against values worked out by hand, and the mask pasting that inverts
RoIAlign's crop."""

from __future__ import annotations

import torch

from papercli.methods.roi import paste_masks, roi_align, roi_pool, rois_from


def ramp(height: int, width: int) -> torch.Tensor:
    """(1, 2, H, W): channel 0 holds each cell's column index x, channel 1 holds x · y."""
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([x, x * y])[None]


def test_roi_align_samples_bilinearly_without_rounding():
    """Cell i's centre is at i + 0.5, so at a point (u, v) the bilinear blend of x is u − 0.5 and
    of x·y is (u − 0.5)(v − 0.5) (both are bilinear, so interpolation is exact)."""
    features = ramp(8, 8)
    # box x 1 … 5, y 2 … 4 in cells, 2 x 2 bins, 2 x 2 samples per bin
    out = roi_align(features, torch.tensor([[0.0, 1, 2, 5, 4]]), 2, sampling_ratio=2)
    # x samples at 1.5, 2.5 | 3.5, 4.5 → values 1, 2 | 3, 4 → bin means 1.5 and 3.5
    assert torch.allclose(out[0, 0], torch.tensor([[1.5, 3.5], [1.5, 3.5]]))
    # y samples at 2.25, 2.75 | 3.25, 3.75 → y − 0.5 = 1.75, 2.25 | 2.75, 3.25 → means 2.0, 3.0
    assert torch.allclose(out[0, 1], torch.tensor([[1.5 * 2.0, 3.5 * 2.0], [1.5 * 3.0, 3.5 * 3.0]]))
    # a box moved by a quarter cell moves the output by exactly a quarter (no quantisation)
    moved = roi_align(features, torch.tensor([[0.0, 1.25, 2, 5.25, 4]]), 2, sampling_ratio=2)
    assert torch.allclose(moved[0, 0] - out[0, 0], torch.full((2, 2), 0.25))


def test_roi_align_maps_image_boxes_through_the_scale_and_picks_the_image():
    features = torch.cat([ramp(8, 8), 10 + ramp(8, 8)])  # image 1 = image 0 + 10
    rois = torch.tensor([[1.0, 4, 8, 20, 16], [0.0, 4, 8, 20, 16]])  # image px at stride 4
    out = roi_align(features, rois, (1, 2), spatial_scale=0.25, sampling_ratio=1)
    # feature box x 1 … 5: one sample per bin at 2.0 and 4.0 → x = 1.5 and 3.5
    assert torch.allclose(out[1, 0, 0], torch.tensor([1.5, 3.5]))
    assert torch.allclose(out[0, 0, 0], torch.tensor([11.5, 13.5]))


def test_roi_align_gradients_reach_the_sampled_cells_only():
    features = torch.zeros(1, 1, 6, 6, requires_grad=True)
    roi_align(
        features, torch.tensor([[0.0, 2.5, 2.5, 3.5, 3.5]]), 1, sampling_ratio=1
    ).sum().backward()
    # one sample at (3, 3): a quarter each to the cells centred at 2.5 and 3.5 in x and y
    expected = torch.zeros(6, 6)
    expected[2:4, 2:4] = 0.25
    assert torch.allclose(features.grad[0, 0], expected)


def test_roi_pool_rounds_the_box_and_its_bins():
    features = torch.arange(36.0).view(1, 1, 6, 6)  # value = 6y + x
    out = roi_pool(features, torch.tensor([[0.0, 0, 0, 4, 4]]), 2)
    # cells 0 … 3 in two bins of two: the maxima sit at the bottom-right cell of each bin
    assert torch.equal(out[0, 0], torch.tensor([[7.0, 9.0], [19.0, 21.0]]))
    # x 0.6 … 3.4 rounds to cells 1 … 2, y 0.4 … 3.6 to cells 0 … 3: bins {1}, {2} and {0,1}, {2,3}
    out = roi_pool(features, torch.tensor([[0.0, 0.6, 0.4, 3.4, 3.6]]), 2)
    assert torch.equal(out[0, 0], torch.tensor([[7.0, 8.0], [19.0, 20.0]]))
    # a quarter-cell shift changes nothing: the misalignment RoIAlign removes (Mask R-CNN Sec. 3)
    shifted = roi_pool(features, torch.tensor([[0.0, 0.85, 0.4, 3.15, 3.6]]), 2)
    assert torch.equal(shifted, out)
    # three bins over two cells: bin edges floor(j·2/3) … ceil((j+1)·2/3) → {0}, {0,1}, {1}
    out = roi_pool(features, torch.tensor([[0.0, 0, 0, 2, 1]]), (1, 3))
    assert torch.equal(out[0, 0], torch.tensor([[0.0, 1.0, 1.0]]))


def test_roi_pool_scale_images_and_gradient():
    features = torch.stack([torch.arange(16.0).view(1, 4, 4), -torch.arange(16.0).view(1, 4, 4)])
    features.requires_grad_(True)
    rois = rois_from([torch.tensor([[0.0, 0, 8, 8]]), torch.tensor([[0.0, 0, 8, 8]])])
    out = roi_pool(features, rois, 1, spatial_scale=0.25)  # cells 0 … 1 of each image
    assert out.flatten().tolist() == [5.0, 0.0]
    out.sum().backward()
    assert features.grad[0, 0, 1, 1] == 1 and features.grad[1, 0, 0, 0] == 1
    assert features.grad.abs().sum() == 2  # max pooling routes the gradient to the argmax only


def test_paste_masks_inverts_roi_align_on_the_box():
    mask = torch.zeros(1, 1, 32, 32)
    mask[0, 0, 10:20, 6:14] = 1.0  # a rectangle
    box = torch.tensor([[4.0, 8, 16, 22]])
    crop = roi_align(mask, rois_from([box]), 28, sampling_ratio=2)[:, 0]
    pasted = paste_masks(crop, box, 32, 32)
    assert pasted.shape == (1, 32, 32)
    assert torch.equal(pasted[0] >= 0.5, mask[0, 0] >= 0.5)
    assert pasted[0, :, :4].abs().max() == 0 and pasted[0, :8].abs().max() == 0  # outside the box
    assert paste_masks(crop[:0], box[:0], 32, 32).shape == (0, 32, 32)


def test_roi_pool_matches_a_loop_over_every_bin():
    """The range-max table gives each sub-window's plain max, for random boxes at a stride."""
    import math

    torch.manual_seed(0)
    features = torch.randn(2, 3, 13, 11)
    corner = torch.rand(60, 2) * 40
    rois = torch.cat(
        [torch.randint(0, 2, (60, 1)).float(), corner, corner + torch.rand(60, 2) * 40], 1
    )
    out = roi_pool(features, rois, (3, 4), 0.25)
    for k in range(len(rois)):
        i = int(rois[k, 0])
        x0, y0, x1, y1 = (math.floor(v * 0.25 + 0.5) for v in rois[k, 1:].tolist())
        rw, rh = max(x1 - x0, 1), max(y1 - y0, 1)
        for p in range(3):
            for q in range(4):
                ya, yb = (
                    min(y0 + f(e * rh / 3), 13) for f, e in ((math.floor, p), (math.ceil, p + 1))
                )
                xa, xb = (
                    min(x0 + f(e * rw / 4), 11) for f, e in ((math.floor, q), (math.ceil, q + 1))
                )
                cell = features[i, :, ya:yb, xa:xb]
                expected = cell.amax((1, 2)) if cell.numel() else torch.zeros(3)
                assert torch.equal(out[k, :, p, q], expected)
