"""Masked autoencoders (He et al., 2021, arXiv:2111.06377), Sec. 3.

    masking   each image's patches are shuffled by the argsort of per-sample uniform noise; the
              first 25% stay visible, the rest (75%) are masked; the argsort of the shuffle is the
              index that restores the original order
    encoder   a ViT applied to the *visible* patches only (with their position embeddings and the
              class token): no mask tokens, so it costs a quarter of a full pass
    decoder   a lightweight transformer of its own width and depth: the encoded visible tokens,
              projected to the decoder width, plus a shared learned mask token for every masked
              patch, unshuffled to the image order, plus the decoder's own position embeddings;
              a linear layer predicts each patch's pixels
    loss      mean squared error on the *masked* patches only, against each patch's pixels
              normalised by that patch's own mean and variance (Sec. 3, "Reconstruction target")

The encoder is a `VisionTransformer` (models/vit.py), so fine-tuning uses it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from papercli.models.vit import Block, VisionTransformer, ViTConfig


@dataclass(frozen=True)
class Masking:
    keep: torch.Tensor  # (B, N_visible) patch indices the encoder sees
    mask: torch.Tensor  # (B, N) 1 = masked, in the image's patch order
    restore: torch.Tensor  # (B, N) undoes the shuffle: gather(shuffled, restore) = original order


def random_masking(
    batch: int, patches: int, ratio: float, generator: torch.Generator | None = None
) -> Masking:
    """Sec. 3: per-sample random masking without replacement by argsort of uniform noise."""
    n_keep = int(patches * (1 - ratio))
    noise = torch.rand(batch, patches, generator=generator)
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    mask = torch.ones(batch, patches)
    mask[:, :n_keep] = 0
    return Masking(shuffle[:, :n_keep], mask.gather(1, restore), restore)


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p·p·C), patches in row-major order (the ViT's token order)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    b, n, _ = patches.shape
    g = int(n**0.5)
    x = patches.reshape(b, g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, g * p, g * p)


def normalized_targets(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch's pixels standardised by its own mean and variance (norm_pix_loss)."""
    mean = patches.mean(-1, keepdim=True)
    var = patches.var(-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per patch, averaged over the masked patches only."""
    per_patch = (pred.float() - target.float()).pow(2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


class MAE(nn.Module):
    def __init__(
        self,
        encoder: VisionTransformer,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
    ):
        super().__init__()
        cfg = encoder.cfg
        self.encoder, self.mask_ratio, self.norm_pix_loss = encoder, mask_ratio, norm_pix_loss
        self.patch = cfg.patch_size
        self.decoder_embed = nn.Linear(cfg.dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, decoder_dim) * 0.02)
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, cfg.grid**2 + 1, decoder_dim) * 0.02)
        dec = ViTConfig(dim=decoder_dim, heads=decoder_heads, mlp_dim=4 * decoder_dim)
        self.decoder_blocks = nn.Sequential(*(Block(dec) for _ in range(decoder_depth)))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch**2 * cfg.in_channels)

    def encode_visible(self, images: torch.Tensor, masking: Masking) -> torch.Tensor:
        """The encoder on the visible patches: (B, 1 + N_visible, D) after its last LayerNorm."""
        enc = self.encoder
        x = enc.patch_embed(images).flatten(2).transpose(1, 2) + enc.pos_embed[:, 1:]
        keep = masking.keep.to(x.device)
        x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = enc.cls_token + enc.pos_embed[:, :1]
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
        return enc.norm(enc.blocks(x))

    def decode(self, latent: torch.Tensor, masking: Masking) -> torch.Tensor:
        """Pixels of every patch (B, N, p·p·C) from the visible tokens and mask tokens."""
        x = self.decoder_embed(latent)
        cls, visible = x[:, :1], x[:, 1:]
        b, n = masking.mask.shape
        shuffled = torch.cat([visible, self.mask_token.expand(b, n - visible.shape[1], -1)], 1)
        restore = masking.restore.to(x.device)
        x = shuffled.gather(1, restore[..., None].expand(-1, -1, x.shape[-1]))  # image order
        x = torch.cat([cls, x], dim=1) + self.decoder_pos_embed
        return self.decoder_pred(self.decoder_norm(self.decoder_blocks(x))[:, 1:])

    def forward(self, images: torch.Tensor, masking: Masking) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss on the masked patches, predicted patches)."""
        pred = self.decode(self.encode_visible(images, masking), masking)
        target = patchify(images, self.patch)
        if self.norm_pix_loss:
            target = normalized_targets(target)
        return masked_mse(pred, target, masking.mask.to(pred.device)), pred
