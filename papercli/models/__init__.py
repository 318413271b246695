"""Models by name, timm-style: `create_model("resnet56")`, `create_model("vit-b/16")`.

Each architecture lives in its own file, in plain torch, with no training code."""

from __future__ import annotations

import re
from typing import Any


def create_model(name: str, **kwargs: Any):
    """resnet{18,34,50,101,152} and plain{18,34,…}: ImageNet family; resnet{20,32,44,56,110}-cifar and
    plain{…}-cifar: CIFAR family (6n+2); vit-{ti,s,b,l,h}/{patch}; unet-paper, unet-mini."""
    key = name.lower()
    if key.startswith("vit"):
        from papercli.models.vit import vit

        return vit(key, **kwargs)
    if key.startswith("unet"):
        from papercli.models.unet import unet

        return unet(key, **kwargs)
    m = re.fullmatch(r"(resnet|plain)(\d+)(-cifar)?", key)
    if m:
        from papercli.models import resnet

        depth, residual = int(m.group(2)), m.group(1) == "resnet"
        if m.group(3) or depth not in resnet.IMAGENET_LAYERS:
            return resnet.cifar_resnet(depth, residual=residual, **kwargs)
        return resnet.imagenet_resnet(depth, residual=residual, **kwargs)
    raise ValueError(f"unknown model '{name}'")
