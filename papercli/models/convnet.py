"""Plain convolution stacks written as a list, the way 2015-era papers print them (YOLO's Fig. 3,
VGG's Table 1 as SSD uses it): one entry per layer, so a model file states its network as the
paper's table and this module turns the table into layers.

Entries:
    (kernel, channels)                 conv, stride 1, "same" padding
    (kernel, channels, stride)         conv with that stride ("same" padding: kernel // 2)
    (kernel, channels, stride, dilation)  a dilated (à trous) conv, "same" padding
    (kernel, channels, stride, dilation, padding)  explicit padding (0: SSD's "valid" convs)
    "M"   2x2 max-pool, stride 2        "MC"  the same, rounding up (SSD's pool3: 75 → 38)
    "M3"  3x3 max-pool, stride 1, padding 1 (SSD's pool5, which keeps the map size)
Every conv is followed by the activation, and by batch norm first when `batch_norm` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

Layer = tuple[int, ...] | str


def conv_stack(
    spec: Sequence[Layer],
    in_channels: int,
    activation: Callable[[], nn.Module],
    batch_norm: bool = False,
) -> tuple[nn.Sequential, int]:
    """The layers of `spec` and the number of channels they end with."""
    layers: list[nn.Module] = []
    channels = in_channels
    for entry in spec:
        if isinstance(entry, str):
            layers.append(_pool(entry))
            continue
        kernel, out, stride, dilation, padding = _conv_entry(entry)
        layers.append(
            nn.Conv2d(channels, out, kernel, stride, padding, dilation, bias=not batch_norm)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(activation())
        channels = out
    return nn.Sequential(*layers), channels


def output_side(spec: Sequence[Layer], side: int) -> int:
    """The side of the map `spec` makes from a `side` x `side` input (PyTorch's size rules)."""
    for entry in spec:
        if entry == "M":
            side //= 2
        elif entry == "MC":
            side = -(-side // 2)
        elif isinstance(entry, tuple):
            kernel, _, stride, dilation, padding = _conv_entry(entry)
            side = (side + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return side


def _conv_entry(entry: tuple[int, ...]) -> tuple[int, int, int, int, int]:
    """(kernel, channels[, stride[, dilation[, padding]]]) with the defaults filled in."""
    kernel, out, stride, dilation, padding = (*entry, *(1, 1, -1)[len(entry) - 2 :])
    return kernel, out, stride, dilation, dilation * (kernel // 2) if padding < 0 else padding


def _pool(entry: str) -> nn.Module:
    if entry == "M":
        return nn.MaxPool2d(2, 2)
    if entry == "MC":
        return nn.MaxPool2d(2, 2, ceil_mode=True)
    if entry == "M3":
        return nn.MaxPool2d(3, 1, 1)
    raise ValueError(f"unknown layer '{entry}' in a conv stack (use M, MC or M3)")
