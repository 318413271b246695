"""Region-of-interest feature extraction in plain torch (torchvision's ops do not load here).

Boxes are (x0, y0, x1, y1) in image pixel edges; `rois` are (K, 5) rows (image index, x0, y0,
x1, y1), and `spatial_scale` maps image coordinates onto the feature map (1 / stride).

roi_pool    Fast R-CNN's RoI max pooling (Sec. 2.1): the box is rounded to feature cells, split
            into an h x w grid of sub-windows whose edges are rounded again, each max-pooled.
roi_align   Mask R-CNN's RoIAlign (Sec. 3, Fig. 3): no rounding anywhere; each bin averages
            `sampling_ratio`² bilinearly interpolated samples at regular points inside it.
paste_masks the inverse for masks: a (k, m, m) mask per box drawn back onto the image (Sec. 3,
            "Implementation Details": resized to the box and binarised at 0.5 by the caller).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# one dense masked-max intermediate (rois x C x H x W x bins) stays under this many elements
_POOL_CHUNK_ELEMENTS = 2**25


def rois_from(boxes: list[torch.Tensor]) -> torch.Tensor:
    """(K, 5) rois from one (k_i, 4) box tensor per image."""
    if not boxes:
        return torch.zeros(0, 5)
    index = [torch.full((len(b), 1), float(i), device=b.device) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(index), torch.cat(boxes).float()], dim=1)


def _sample_points(starts: torch.Tensor, ends: torch.Tensor, bins: int, ratio: int):
    """(K, bins · ratio) regularly spaced sample coordinates: `ratio` per bin, at the centres of
    the bin's equal parts."""
    steps = (torch.arange(bins * ratio, device=starts.device, dtype=starts.dtype) + 0.5) / ratio
    return starts[:, None] + steps[None, :] * ((ends - starts) / bins)[:, None]


def roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
) -> torch.Tensor:
    """(K, C, h, w) RoIAlign features of `rois` (K, 5) on `features` (N, C, H, W).

    A continuous coordinate p on the feature map is a pixel edge, so cell i's centre is at
    i + 0.5 and a sample at p reads the bilinear blend of the cells whose centres surround it —
    exactly `grid_sample` with align_corners=False. Samples beyond the outermost centres take the
    border value (torchvision zeroes them only more than one cell outside the map)."""
    h, w = (output_size, output_size) if isinstance(output_size, int) else output_size
    k, c = len(rois), features.shape[1]
    out = features.new_zeros(k, c, h, w)
    if k == 0:
        return out
    height, width = features.shape[-2:]
    boxes = rois[:, 1:].to(features.dtype) * spatial_scale
    xs = _sample_points(boxes[:, 0], boxes[:, 2], w, sampling_ratio) * (2 / width) - 1
    ys = _sample_points(boxes[:, 1], boxes[:, 3], h, sampling_ratio) * (2 / height) - 1
    grid = torch.stack(
        [xs[:, None, :].expand(-1, ys.shape[1], -1), ys[:, :, None].expand(-1, -1, xs.shape[1])],
        dim=-1,
    )  # (K, h·r, w·r, 2) as (x, y)
    image = rois[:, 0].long()
    for i in image.unique().tolist():
        pick = (image == i).nonzero().flatten()
        g = grid[pick]
        sampled = F.grid_sample(
            features[i : i + 1],
            g.reshape(1, -1, g.shape[2], 2),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )  # (1, C, n·h·r, w·r)
        sampled = sampled.view(c, len(pick), g.shape[1], g.shape[2]).transpose(0, 1)
        out[pick] = F.avg_pool2d(sampled, sampling_ratio)  # the average of each bin's samples
    return out


def _bin_masks(starts: torch.Tensor, sizes: torch.Tensor, bins: int, length: int) -> torch.Tensor:
    """(K, bins, length) bool: which feature cells each of the `bins` sub-windows covers
    (Caffe's RoIPool: bin j spans floor(j·size/bins) … ceil((j + 1)·size/bins), clipped)."""
    j = torch.arange(bins, device=starts.device, dtype=torch.float32)
    lo = starts[:, None] + torch.floor(j[None] * sizes[:, None] / bins)
    hi = starts[:, None] + torch.ceil((j[None] + 1) * sizes[:, None] / bins)
    cells = torch.arange(length, device=starts.device, dtype=torch.float32)
    return (cells[None, None] >= lo.clamp(0, length)[..., None]) & (
        cells[None, None] < hi.clamp(0, length)[..., None]
    )


def roi_pool(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> torch.Tensor:
    """(K, C, h, w) RoI max pooling (Fast R-CNN Sec. 2.1): the box's edges are rounded to cells
    (x0·scale and x1·scale to the nearest integer, at least one cell wide), the cells are split
    into h x w sub-windows of about equal size, each max-pooled; an empty sub-window gives 0.
    Max over a rectangle is a max over columns, then over rows, which keeps memory small."""
    h, w = (output_size, output_size) if isinstance(output_size, int) else output_size
    k, c = len(rois), features.shape[1]
    height, width = features.shape[-2:]
    out = features.new_zeros(k, c, h, w)
    if k == 0:
        return out
    quantised = torch.floor(rois[:, 1:].float() * spatial_scale + 0.5)  # round half up
    x0, y0, x1, y1 = quantised.unbind(1)
    cols = _bin_masks(x0, (x1 - x0).clamp(min=1), w, width)  # (K, w, W)
    rows = _bin_masks(y0, (y1 - y0).clamp(min=1), h, height)  # (K, h, H)
    low = torch.finfo(features.dtype).min
    image = rois[:, 0].long()
    chunk = max(1, _POOL_CHUNK_ELEMENTS // max(1, c * height * width * max(h, w)))
    for i in image.unique().tolist():
        picks = (image == i).nonzero().flatten()
        fmap = features[i]  # (C, H, W)
        for pick in picks.split(chunk):
            by_col = torch.where(cols[pick][:, None, None], fmap[None, :, :, None, :], low).amax(
                -1
            )  # (n, C, H, w)
            by_bin = torch.where(rows[pick][:, None, :, :, None], by_col[:, :, None], low).amax(
                3
            )  # (n, C, h, w)
            empty = ~(rows[pick][:, :, None, :].any(-1) & cols[pick][:, None, :, :].any(-1))
            out[pick] = by_bin.masked_fill(empty[:, None], 0.0)
    return out


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(k, H, W) values of (k, m, m) box-relative masks drawn into their boxes on an H x W image
    (bilinear, 0 outside the box): pixel (y, x)'s centre at (x + 0.5 − x0) / (x1 − x0) of the
    box's width reads the mask there."""
    k = len(masks)
    if k == 0:
        return masks.new_zeros(0, height, width)
    x0, y0, x1, y1 = boxes.to(masks.dtype).unbind(1)
    px = torch.arange(width, device=masks.device, dtype=masks.dtype) + 0.5
    py = torch.arange(height, device=masks.device, dtype=masks.dtype) + 0.5
    gx = (px[None] - x0[:, None]) / (x1 - x0).clamp(min=1e-6)[:, None] * 2 - 1  # (k, W)
    gy = (py[None] - y0[:, None]) / (y1 - y0).clamp(min=1e-6)[:, None] * 2 - 1  # (k, H)
    grid = torch.stack(
        [gx[:, None, :].expand(-1, height, -1), gy[:, :, None].expand(-1, -1, width)], dim=-1
    )
    return F.grid_sample(
        masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[:, 0]
