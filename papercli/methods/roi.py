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


def _bin_edges(starts: torch.Tensor, sizes: torch.Tensor, bins: int, length: int):
    """(K, bins) first and one-past-last feature cell of each sub-window (Caffe's RoIPool: bin j
    spans floor(j·size/bins) … ceil((j + 1)·size/bins) from the box's first cell, clipped)."""
    j = torch.arange(bins, device=starts.device, dtype=torch.float32)
    lo = starts[:, None] + torch.floor(j[None] * sizes[:, None] / bins)
    hi = starts[:, None] + torch.ceil((j[None] + 1) * sizes[:, None] / bins)
    return lo.clamp(0, length).long(), hi.clamp(0, length).long()


def _range_max_table(fmap: torch.Tensor) -> torch.Tensor:
    """(LY, LX, C, H, W) 2-D sparse table: entry [a, b, :, y, x] is the max over the 2^a x 2^b
    cells from (y, x) (cells past the map count as the lowest value). Any rectangle's max is then
    the max of four overlapping table entries."""
    low = torch.finfo(fmap.dtype).min
    height, width = fmap.shape[-2:]
    rows = [fmap]
    for a in range(1, max(height, 1).bit_length()):
        prev, half = rows[-1], 1 << (a - 1)
        shifted = F.pad(prev[:, half:], (0, 0, 0, half), value=low)
        rows.append(torch.maximum(prev, shifted))
    table = []
    for row in rows:
        cols = [row]
        for b in range(1, max(width, 1).bit_length()):
            prev, half = cols[-1], 1 << (b - 1)
            cols.append(torch.maximum(prev, F.pad(prev[:, :, half:], (0, half), value=low)))
        table.append(torch.stack(cols))
    return torch.stack(table)


def roi_pool(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> torch.Tensor:
    """(K, C, h, w) RoI max pooling (Fast R-CNN Sec. 2.1): the box's edges are rounded to cells
    (x0·scale and x1·scale to the nearest integer, at least one cell wide), the cells are split
    into h x w sub-windows of about equal size, each max-pooled; an empty sub-window gives 0.
    Sub-window maxima are read from a range-max table of the map (four lookups each)."""
    h, w = (output_size, output_size) if isinstance(output_size, int) else output_size
    k, c = len(rois), features.shape[1]
    height, width = features.shape[-2:]
    out = features.new_zeros(k, c, h, w)
    if k == 0:
        return out
    quantised = torch.floor(rois[:, 1:].float() * spatial_scale + 0.5)  # round half up
    x0, y0, x1, y1 = quantised.unbind(1)
    row_lo, row_hi = _bin_edges(y0, (y1 - y0).clamp(min=1), h, height)  # (K, h)
    col_lo, col_hi = _bin_edges(x0, (x1 - x0).clamp(min=1), w, width)  # (K, w)
    ry, rx = (row_hi - row_lo).clamp(min=1), (col_hi - col_lo).clamp(min=1)
    a = torch.floor(torch.log2(ry.float())).long()  # the largest power of two inside the range
    b = torch.floor(torch.log2(rx.float())).long()
    ys = (row_lo, row_hi - (1 << a))  # two overlapping row blocks cover the range …
    xs = (col_lo, col_hi - (1 << b))  # … and two column blocks
    levels_x = max(width, 1).bit_length()
    empty = (row_hi <= row_lo)[:, :, None] | (col_hi <= col_lo)[:, None, :]  # (K, h, w)
    image = rois[:, 0].long()
    for i in image.unique().tolist():
        pick = (image == i).nonzero().flatten()
        table = _range_max_table(features[i]).transpose(1, 2).transpose(0, 1)  # (C, LY, LX, H, W)
        flat = table.reshape(c, -1)
        level = (a[pick][:, :, None] * levels_x + b[pick][:, None, :]) * (height * width)
        best = None
        for y in ys:
            for x in xs:
                index = level + y[pick][:, :, None] * width + x[pick][:, None, :]  # (n, h, w)
                value = flat[:, index.flatten()].view(c, len(pick), h, w)
                best = value if best is None else torch.maximum(best, value)
        out[pick] = best.transpose(0, 1).masked_fill(empty[pick][:, None], 0.0)
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
