"""Diagnose a finished R-CNN-family mini run (papercli/recipes/rcnn.py) from its checkpoint:
proposal recall on the test scenes (share of objects whose best proposal reaches IoU 0.5 / 0.7 /
0.8 / 0.9) of the fixed proposals, of the bare anchors and of the RPN's top N, and the faster
arm's mAP on its own RPN proposals vs on the fixed ones (is it the proposals or the detector?).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/rcnn_proposal_recall.py RUN_DIR [KEY=VALUE ...]

KEY=VALUE are the run's --set overrides (Python literals; `arms=fast,faster`; nested detector
fields as `detector.anchor_sizes=((10,14,20,28),)`), so the model built matches the checkpoint.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

import torch

from papercli.methods.boxes import box_iou
from papercli.recipes.rcnn import MINI, RCNNRecipe
from papercli.reproduce import checkpoint
from papercli.reproduce.recipe import Context

IOUS = (0.5, 0.7, 0.8, 0.9)
TOP_N = (50, 100, 300, 1000)


def config(settings: list[str]):
    top, detector = {}, {}
    for item in settings:
        key, value = item.split("=", 1)
        if key == "arms":
            top[key] = tuple(value.split(","))
        elif key.startswith("detector."):
            detector[key.removeprefix("detector.")] = ast.literal_eval(value)
        else:
            top[key] = ast.literal_eval(value)
    if detector:
        top["detector"] = dataclasses.replace(MINI.detector, **detector)
    return dataclasses.replace(MINI, **top)


def line(name: str, best: list[torch.Tensor]) -> str:
    b = torch.cat(best)
    recall = " / ".join(f"{(b >= t).float().mean():.3f}" for t in IOUS)
    return f"{name:<28} {recall}   mean best IoU {b.mean():.3f}"


def main(run: Path, settings: list[str]) -> None:
    cfg = config(settings)
    recipe = RCNNRecipe(cfg, Context(device=torch.device("cpu"), seed=0))
    recipe.ensure_data()
    model = recipe.build_model()
    model.load_state_dict(checkpoint.load(run / checkpoint.CHECKPOINT)["model"])
    model.eval()
    arm = model["faster"]
    fixed, anchor_best, counts = [], [], []
    rpn: dict[int, list[torch.Tensor]] = {n: [] for n in TOP_N}
    with torch.no_grad():
        for images, targets in recipe._test_batches():
            scores, deltas, anchors = arm.rpn_forward(arm.shared(images))
            for n in TOP_N:
                props = arm.propose(
                    scores, deltas, anchors, images.shape[-2:], max(cfg.test_pre_nms, n), n
                )
                for p, t in zip(props, targets, strict=True):
                    rpn[n].append(box_iou(t["boxes"], p).max(1).values)
            for p, t in zip(recipe.fixed(images), targets, strict=True):
                fixed.append(box_iou(t["boxes"], p).max(1).values)
                anchor_best.append(box_iou(t["boxes"], anchors).max(1).values)
                counts.append(len(p))
        print(f"{len(torch.cat(fixed))} objects; recall at IoU " + " / ".join(map(str, IOUS)))
        print(line(f"fixed ({sum(counts) / len(counts):.0f} per image)", fixed))
        print(line("all anchors (no RPN)", anchor_best))
        for n, best in rpn.items():
            print(line(f"RPN top {n}", best))
        only = torch.nn.ModuleDict({"faster": arm})
        m = recipe.evaluate(only)
        print(f"faster arm on its RPN's top {cfg.test_proposals}: mAP {m['faster_map']:.3f}")
        rpn_module, arm.rpn = arm.rpn, None  # without an RPN, `detect` uses the fixed proposals
        m = recipe.evaluate(only)
        arm.rpn = rpn_module
        print(f"faster arm on the fixed proposals:  mAP {m['faster_map']:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
