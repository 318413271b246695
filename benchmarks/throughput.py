"""Training and evaluation throughput (images/s) of our ResNet-50, ViT-B/16, Swin-T and DeiT-B
against references.

    python benchmarks/throughput.py                      # CPU, fp32, small batch
    python benchmarks/throughput.py --device cuda --bf16 --compile --batch 256

    python benchmarks/throughput.py --device cuda --bf16 --compile --models swin-t,deit-b/16

Reference models: timm's same architectures (TIMM_NAMES) when timm imports (it does not on the CPU
machine here: torchvision is missing). Otherwise the reference is our own model with its speed
features switched off — ViT attention written out as softmax(QKᵀ/√d)V instead of
scaled_dot_product_attention, ResNet in NCHW instead of channels_last — and the output says so.
For ViT on CUDA it also prints model FLOPs utilisation (MFU) from an analytic FLOP count.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from papercli.models import create_model
from papercli.models.vit import Attention

# our model name -> timm's same architecture (the references of issues 13-16's GPU reports)
TIMM_NAMES = {
    "resnet50": "resnet50",
    "vit-b/16": "vit_base_patch16_224",
    "swin-t": "swin_tiny_patch4_window7_224",
    "deit-b/16": "deit_base_patch16_224",
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core FLOP/s


def vit_train_flops(cfg) -> float:
    """FLOPs of one training image: 3x the forward (backward ~ 2x forward), 2 FLOPs per MAC."""
    n, d, layers = cfg.grid**2 + 1, cfg.dim, cfg.depth
    per_layer = (
        n * (4 * d * d + 2 * d * cfg.mlp_dim) + 2 * n * n * d
    )  # projections, MLP, QKᵀ and AV
    patch = cfg.grid**2 * d * cfg.in_channels * cfg.patch_size**2
    return 3 * 2 * (layers * per_layer + patch + d * cfg.num_classes)


def naive_attention(self: Attention, x: torch.Tensor) -> torch.Tensor:
    b, n, d = x.shape
    q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    att = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
    out = att.softmax(-1) @ v
    return self.proj(out.transpose(1, 2).reshape(b, n, d))


def reference(name: str):
    try:
        import timm

        return timm.create_model(TIMM_NAMES[name]), "timm"
    except (
        Exception
    ):  # timm missing or unusable (no torchvision): our model with speed features off
        model = create_model(name)
        if name.startswith("resnet"):
            return model, "ours in NCHW (timm unavailable)"
        naive = [m for m in model.modules() if isinstance(m, Attention)]
        for m in naive:
            m.forward = naive_attention.__get__(m, Attention)
        return model, "ours" + (" without fused attention" if naive else "") + " (timm unavailable)"


def measure(
    model, *, device, batch, steps, warmup, bf16, compile_, channels_last, size=224
) -> dict[str, float]:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    run = torch.compile(model) if compile_ else model
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    ctx = (
        (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16))
        if bf16
        else torch.enable_grad
    )

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step():
        with ctx():
            loss = F.cross_entropy(run(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def eval_step():
        with (
            torch.no_grad(),
            (
                torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                if bf16
                else torch.no_grad()
            ),
        ):
            run(x)

    results = {}
    for label, step, mode in (("train", train_step, True), ("eval", eval_step, False)):
        model.train(mode)
        for _ in range(warmup):
            step()
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        results[f"{label}_img_s"] = batch * steps / (time.perf_counter() - t0)
    if device.type == "cuda":
        results["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default="resnet50,vit-b/16")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--json", type=str, default="", help="also write the results to this file")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in args.models.split(","):
        for which in ("ours", "reference"):
            model, label = (create_model(name), "papercli") if which == "ours" else reference(name)
            conv = name.startswith("resnet")
            cl = conv and device.type == "cuda" and (which == "ours" or label == "timm")
            r = measure(
                model,
                device=device,
                batch=args.batch,
                steps=args.steps,
                warmup=args.warmup,
                bf16=args.bf16,
                compile_=args.compile,
                channels_last=cl,
            )
            r.update(model=name, impl=label)
            if name.startswith("vit") and device.type == "cuda":
                from papercli.models.vit import config

                peak = next(
                    (v for k, v in PEAK_BF16.items() if k in torch.cuda.get_device_name()), None
                )
                if peak:
                    r["mfu"] = r["train_img_s"] * vit_train_flops(config(name)) / peak
            rows.append(r)
            print(
                f"{name:10} {label:48} train {r['train_img_s']:9.1f} img/s   eval {r['eval_img_s']:9.1f} img/s"
                + (f"   MFU {r['mfu']:.1%}" if "mfu" in r else "")
                + (f"   peak {r['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in r else ""),
                flush=True,
            )
    settings = f"device={device} batch={args.batch} bf16={args.bf16} compile={args.compile}"
    print(settings)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"settings": settings, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
