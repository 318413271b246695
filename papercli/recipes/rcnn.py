"""The R-CNN family, three papers in one run: R-CNN (Girshick, Donahue, Darrell & Malik, 2014),
Fast R-CNN (Girshick, 2015) and Faster R-CNN (Ren, He, Girshick & Sun, 2015). Three detectors
train side by side on the same batches (models/rcnn.py, methods/region_training.py):

  rcnn    fixed proposals (methods/region_proposals.py: segments at several thresholds and
          blurs, their unions and sliding windows — our selective search, ~490 per cluttered
          64 px image), each proposal warped to `warp` pixels and run through its own CNN pass
          (R-CNN Sec. 2.1); classified by a softmax over K + 1 classes with per-class box
          regression, fine-tuned end to end (R-CNN trains SVMs on the fine-tuned features
          instead; Fast R-CNN Sec. 5.4 finds the softmax as good). Warping has no context
          padding (R-CNN App. A).
  fast    the same proposals, but the CNN runs once per image; each proposal is RoI-pooled from
          the shared map (Sec. 2.1) into the same fc head, trained with the multi-task loss
          (Eq. 1: log loss + λ smooth-L1, λ = 1) on R / N RoIs per image, 25 % with IoU ≥ 0.5.
  faster  a Region Proposal Network on the same shared map (Sec. 3.1: a 3x3 conv, k = 9 anchors
          of 3 sizes x 3 aspect ratios per position, 256 sampled anchors per image, Eq. 1), its
          top `test_proposals` after NMS at 0.7 feeding the Fast R-CNN head; RPN and head trained
          together ("approximate joint training", Sec. 3.2), proposals not back-propagated.
The rcnn and fast arms see the same RoIs in every step (the same proposals and sampling draws).

Claims checked at mini scale (registry: rcnn, fast-rcnn, faster-rcnn):
  - R-CNN: CNN features of warped proposals detect objects: rcnn_map above a floor;
  - Fast R-CNN: sharing the convolutions makes test time a large multiple faster than R-CNN's
    per-region passes (Table 4: 146x / 213x with VGG-16), measured as
    rcnn_ms_per_image / fast_ms_per_image, at no loss of mAP (Table 1: 66.9 vs 66.0 % on VOC07);
  - Faster R-CNN: learned RPN proposals beat the fixed ones with far fewer per image (Table 2:
    RPN 300 proposals 59.9 % mAP vs selective search 2000 at 58.7 %, ZF net): faster_map −
    fast_map above a margin, with `test_proposals` (300) against ~490 fixed ones.

    mini   64 px Fashion-MNIST scenes (1-4 items of 12-32 px, 10 classes) on a cluttered
           background (10 dim fragments of other photos of the same split, brightness <= 0.5,
           see papercli/data/scenes.py), a 4-conv stack (16-32-32-32 channels, one 2x2 pool:
           stride 2) and a 2 x 256 fc head on a 7x7 grid; R-CNN warps each region to 28 px, whose
           14x14 map is max-pooled to the same 7x7 grid (as VGG-16's pool5 halves 14x14 to 7x7 at
           224 px); RPN anchors 12, 20, 32 px x ratios 0.5, 1, 2, 300 test proposals (Table 2);
           AdamW from scratch (no ImageNet pre-training exists for these images), 900 steps of
           4 images x 32 RoIs = 128 RoIs per step, every arm on the same RoIs (R-CNN Sec. 2.3
           fine-tunes on 128-region mini-batches; Fast R-CNN Sec. 2.3 takes R = 128 from N = 2
           images: fewer images, more RoIs each; N = 4 here, since the RPN learns from images)
    paper  VGG-16 (Table 1 column D; ImageNet-pretrained in the papers — load weights yourself)
           on COCO 2017 from --data (a COCO folder, see papercli/data/coco.py; letterboxed to
           800 px), SGD momentum 0.9, weight decay 5e-4, lr 1e-3 then 1e-4 (Faster R-CNN Sec. 4.2
           COCO: 240k then 80k iterations, one image per GPU x 8), 2 images per batch, 128 RoIs
           each, RPN anchors 128/256/512; the fixed proposals stand in for selective search.

Metrics: <arm>_map (COCO AP@[.5:.95]), <arm>_map_50, …, <arm>_ms_per_image, <arm>_proposals_per_
image, fast_speedup_vs_rcnn, fast_minus_rcnn_map, faster_minus_fast_map.

Why this mini (issue 18): the first minis used plain scenes (black background) and a stride-4
map. There the fixed proposals were unusually good — thresholding finds items on black, ~450
proposals per image reached 98.8 % of test objects at IoU 0.5, 82 % at 0.7 — so a learned RPN
had nothing to add; and RoI pooling read a 12-32 px object from only 3-8 cells of the stride-4
map while R-CNN saw it warped to 28 px, so Fast R-CNN trailed R-CNN by 5.8 points. Now:
  - clutter makes bottom-up proposals imperfect, as on natural images: ~490 per image still
    reach 97.9 % of objects at IoU 0.5, but 73 % at 0.7 and 33 % at 0.9 (plain: 58 %), since
    thresholded segments now merge objects with background fragments (100 test scenes, seed 7).
    Selective search is in the same range at IoU 0.5 (96.7 % of VOC 2007 objects with 1,536
    boxes, van de Sande et al. 2011; Faster R-CNN Fig. 4 shows its recall falling fast as the
    IoU rises);
  - one shared stride-2 map for all three arms: objects span 6-16 cells, and RoI pooling sees
    about what R-CNN's warped 14x14 map sees;
  - 128 RoIs per step from 4 images (was 256 from 8) pays for the finer map (R-CNN's per-region
    passes are most of a training step) and is both papers' mini-batch size.

Measured (one thread, the machine shared with ~3 other jobs; user CPU seconds by /usr/bin/time):
  history, plain scenes, stride 4, 8 images x 32 RoIs, seed 0:
  - 300 steps: rcnn 0.115, fast 0.111, faster 0.068 mAP; 116 s of CPU.
  - 900 steps: rcnn 0.273 (AP50 0.457), fast 0.215, faster 0.202 mAP; test time rcnn 137 ms per
    image, fast 19.4 (7.1x faster), faster 8.0; 304 s of CPU.
  the mini now (cluttered, stride 2, 4 x 32 RoIs, 900 steps; 289 s of CPU):
  - seed 0: rcnn 0.161 (AP50 0.293), fast 0.158 (AP50 0.310), faster 0.148 (AP50 0.314) mAP;
    fast − rcnn −0.3 points; test time rcnn 571 ms per image, fast 85 (6.7x faster), faster
    32; 289 s of CPU (train with this config; the final evaluation was then repeated from the
    checkpoint with 300 RPN test proposals instead of the 100 first tried, which gave 0.143).
  - seed 1: rcnn 0.173 (AP50 0.306), fast 0.166 (AP50 0.337), faster 0.134 (AP50 0.296) mAP;
    fast − rcnn −0.7 points; rcnn 705 ms per image, fast 91 (7.8x faster); 308 s of CPU.
  So R-CNN detects, and Fast R-CNN is 7-8x faster at test time at no real loss of mAP (both Fast
  R-CNN checks now pass). Faster R-CNN does NOT reproduce: its RPN's 300 proposals trail the ~490
  fixed ones by 1.0 (seed 0) and 3.3 points (seed 1), where the paper gains 1.2. On seed 0 its
  AP50 is as good (0.314 vs 0.310; seed 1: 0.296 vs 0.337) but its boxes are less tight (AP75 0.12
  vs 0.15 with 100 proposals). The RPN sees only 4 images per step here and reads a stride-2 map
  whose receptive field (~20 px with its 3x3 conv) is smaller than the larger objects; the paper's
  RPN sees far more context (171 and 228 px for ZF and VGG-16, Sec. 3.1) on ImageNet-pretrained
  features.

Why the RPN loses (issue 18i; seed 0, the mini's config with only the fast and faster arms, 900
steps; proposal recall = share of the 375 objects of the 150 test scenes whose best proposal
reaches the IoU; benchmarks/rcnn_proposal_recall.py measures both from a run's checkpoint):
  - the proposals are NOT what loses the mAP. Recall at IoU 0.5 / 0.7 / 0.8 / 0.9:
        fixed, ~494 per image          0.979 / 0.725 / 0.576 / 0.333
        all 9,216 anchors (no RPN)     0.981 / 0.653 / 0.197 / 0.032
        RPN top 300                    0.984 / 0.789 / 0.245 / 0.008
        RPN top 100 / top 50 (R@0.5)   0.859 / 0.715
    so the RPN's 300 find as many objects as the fixed set at 0.5 and more at 0.7, but few
    tightly: its regression hardly moves the anchors (R@0.8 0.197 -> 0.245; its receptive field,
    ~20 px, is smaller than the larger objects), while a thresholded segment gives a third of
    the objects a fixed box at IoU >= 0.9. Yet the faster arm's detector scores the same on the
    FIXED proposals as on its own (mAP 0.135 vs 0.134), far below the fast arm on those same
    fixed proposals (0.222): the gap is in the trained detector, not in the test proposals;
  - initialisation moves an arm by up to 6 points: the arms are built one after another from one
    random stream, so an arm's init depends on the arms built before it. Fast R-CNN scores 0.222
    built first, 0.158 after R-CNN (the 3-arm mini; rerun on this code: rcnn 0.161, fast 0.158,
    faster 0.148, 283 s of CPU), 0.188 after Faster R-CNN; Faster R-CNN 0.166 first (its head on
    the fixed proposals 0.162), 0.134 after Fast, 0.148 after both. Backbone and head have the
    same shapes in every arm and each arm trains independently of the others (own optimizer, the
    same batches and draws), so the same place in the build order is the same init (checked:
    Faster built after R-CNN instead of after Fast scores 0.134 again, rcnn 0.161): at EQUAL
    initialisation Faster trails Fast by 5.6 points (first: 0.166 vs 0.222) and 2.4 (second:
    0.134 vs 0.158). Single runs cannot resolve the claimed +2 points, and in every pairing the
    faster arm trails;
  - tried, none closes the gap (faster mAP, same seed and order fast, faster; base 0.134):
    train_pre_nms 1000 / train_proposals 300 (the test distribution; the paper trains on 2,000):
    0.121, and 269 s of CPU for two arms; rpn_trains_backbone=false (the shared convs trained by
    the detector alone, as after 4-step alternating training, Sec. 3.2): 0.136, its head on the
    fixed proposals 0.124; anchors 10/14/20/28 with 256 sampled anchors per image and λ = 4
    (Sec. 3.1.3): 0.134 (anchors alone now reach IoU 0.7 for 0.896 of the objects, but the
    RPN's top 300 only 0.760, R@0.5 0.947; its head on the fixed proposals 0.133). The anchors
    12/20/32 reach IoU 0.7 for only 65 % of the test objects (sqrt-area 7-30 px, median 18: the
    32 px anchor is larger than every object; 10/14/20/28 reaches 90 %), and a median object
    has 2-3 anchors at IoU >= 0.7, so few positives train the RPN;
  - what is left: a detector trained on the RPN's proposals learns less than one trained on
    the fixed set (whose segment boxes are tight), by 2.4-5.6 points at equal init, with init
    noise of up to 6 points per arm on top. Closing it would need a larger receptive field for
    the RPN (the paper's covers its objects), several runs per seed or one shared
    initialisation for every arm (the paper's detectors all start from the same ImageNet
    model), and more CPU than the 300 s mini allows. Not tried: the 4-step
    alternating training (Sec. 3.2), whose step 2 trains the detector on a TRAINED RPN's
    proposals instead of the near-random ones joint training feeds it early on.

Ground truth among the RoIs, and the head swapped (issue 18s; seed 0, 900 steps, one thread):
  - every arm already trains on its proposals PLUS the image's ground-truth boxes
    (`sample_rois(add_ground_truth=True)`, the default since the first version): the released
    code does so for both detectors — py-faster-rcnn's proposal_target_layer ("Include
    ground-truth boxes in the set of candidate rois") after the RPN, and Fast R-CNN's training
    roidb, which merges the ground truth with the selective-search boxes. So the head never
    lacked clean foregrounds. Share of foreground among the 32 sampled RoIs per image (cap 25 %),
    as trained (GT appended) and counted on the same proposals without GT, steps 0-99 / 100-299
    / 300-899 (arms fast, faster):
        fast,   ~492 fixed proposals          0.244 / 0.244 / 0.245   (no GT 0.241 / 0.242 / 0.243)
        faster, 97 / 93 / 91 RPN proposals    0.222 / 0.238 / 0.245   (no GT 0.209 / 0.231 / 0.242)
    foreground RoIs available per image: fast ~31, faster 17.5 / 22.3 / 25.9 (8 are drawn). The
    faster arm's head gets as many foregrounds as the fast arm's from step 100 on, and nearly so
    before: the ground truth adds ~1 point of foreground share early, and the foreground share
    is not what the faster arm lacks (run: fast 0.2225, faster 0.1336 mAP, as before; 221 s of
    CPU for the two arms, 12 min of wall on the shared machine);
  - the head swapped, from that checkpoint: the FAST arm's head on the faster arm's 300 RPN
    proposals scores 0.132 mAP (AP50 0.340) against 0.2225 (AP50 0.404) on its own fixed ones,
    so the RPN's loose boxes cost a good head 9 points; the faster arm's head scores 0.134 on
    them (0.135 on the fixed ones, above). Both parts lose: the RPN's boxes, and a head trained on
    them. That head is under-confident, not fooled by the background: on fixed proposals at IoU
    >= 0.5 it gives an object class > 0.5 probability on 0.9 % of them (fast head: 14.6 %), on
    background ones (IoU < 0.3) a mean object probability of 0.014 (fast: 0.012). Its training
    RoIs are ~91 RPN boxes per image, nearly all on or next to objects, so its negatives are
    hard (partial overlaps) and its final class loss stays higher (0.91 vs the fast head's
    0.68);
  - more training proposals, toward the paper's 2,000 (py-faster-rcnn: 12,000 before NMS, 2,000
    after, 300 at test), arms=faster alone (its own init, seed 0): train_pre_nms 300 / 100 after
    NMS (the mini, 87 proposals per image) 0.1655 mAP, 118 s of CPU; 600 / 300 (191 per image)
    0.168, 132 s — no gain for +14 s. The RPN's NMS here (papercli.methods.boxes.nms, an N x N
    IoU matrix and a Python loop) costs 2.1 ms per image at 300 boxes before NMS, 5.8 at 600,
    13.6 at 1,000 and 91 at 2,000 (765 kept): the paper's breadth would add ~330 s to the mini.
  - a wider RPN window (then an experiment, now `detector.rpn_dilation`: the 3x3 conv dilated
    by 4, so it sees 32 px, the largest object, instead of 20 px; the paper's window sees
    171-228 px, more than its objects, Sec. 3.1; same weights and init draws, no added CPU).
    arms=faster alone,
    seed 0: dilation 1 / 2 / 4 give 0.1655 / 0.167 / 0.196 mAP (AP75 0.123 / 0.115 / 0.176;
    118 / 124 / 124 s of CPU). The 3-arm mini with dilation 4: seed 0 rcnn 0.161, fast 0.158,
    faster 0.1545 (AP50 0.349 vs fast 0.310), faster − fast −0.4 points; seed 1 rcnn 0.173,
    fast 0.166, faster 0.143 (AP50 0.317 vs 0.337), −2.4 points; 292 / 289 s of CPU (the rcnn
    and fast numbers are the same as without it). It gains 0.7 and 0.9 points, not the 2.4 and
    5.3 still missing.
    The MINI is unchanged: Faster R-CNN still does NOT reproduce (seeds 0 / 1: −1.0 / −3.3).

One shared, pre-trained initialisation; 4-step training; anchors (issue 18, the brief's three
levers; one thread, user CPU by /usr/bin/time, the machine shared by ~4 jobs). Options, all off
by default: `shared_init` (every arm's backbone and fc6/fc7 + output layers start from ONE
network built before the arms, as the papers' detectors all start from the same ImageNet VGG-16:
no build-order noise), `pretrain_steps` (that network first learns 10-way item classification
on single photos of the TRAINING split, resized to 12-32 px per batch, through the backbone,
a max pool to the 7x7 grid and fc6/fc7, then its fc8 is dropped: ImageNet pre-training's stand-in,
R-CNN Sec. 2.3; 300 steps of 128 photos: 81 / 77 % train accuracy on seeds 0 / 1, ~15 s of CPU),
`rpn_training=alternating` (Sec. 3.2's 4 steps at the step fractions `alternating`: 1 the RPN and
shared convs; 2 a detector restarted from the initial weights on the proposals of step 1's
frozen network; 3 the RPN's own layers on the fixed shared convs; 4 the head alone),
`detector.rpn_dilation` (the RPN window dilated), `detector.anchor_sizes` and `rpn.beta` (the RPN's
smooth-L1 switch point). Every run below: shared_init,
pretrain_steps=300, detector.rpn_dilation=4.
  - 900 steps (the mini's schedule): seed 0 rcnn 0.255 (AP50 0.456), fast 0.264 (AP50 0.493,
    AP75 0.269), faster 0.252 (AP50 0.494, AP75 0.218): faster − fast −1.2 points; seed 1 rcnn
    0.250 (0.429), fast 0.238 (0.440, AP75 0.245), faster 0.238 (0.478, AP75 0.215): −0.03
    points; fast 8.4 / 9.5x faster than rcnn; 311 / 312 s of CPU (over the budget). Pre-training
    lifts EVERY arm by 7-10 points of mAP (rcnn 0.161 -> 0.255, fast 0.158 -> 0.264, faster
    0.148 -> 0.252 on seed 0) and moves the gap (−1.0 / −3.3 -> −1.2 / −0.0), but the RPN's
    300 proposals still do not beat the fixed ones: as good or better at IoU 0.5 (AP50 +0.1 /
    +3.8), looser at 0.75 (AP75 −5.1 / −3.0);
  - 800 steps (lr drop at 600, to pay for the pre-training), seed 0: rcnn 0.227 (0.4075), fast
    0.248 (AP50 0.465, AP75 0.242) in every variant, and
        4-step alternating (0.15, 0.65, 0.75)             faster 0.145 (AP75 0.118)  −10.3   245 s
        anchors 10/14/20/28, 256 anchors/image, λ = 4     faster 0.245 (AP75 0.241)   −0.25  283 s
        the same, rpn_trains_backbone=false               faster 0.238 (AP75 0.217)   −1.0   288 s
    and the anchors 10/14/20/28 run on seed 1: rcnn 0.247 (0.4125), fast 0.247 (0.464, AP75
    0.243), faster 0.214 (AP50 0.440, AP75 0.174): −3.3 points, 287 s. The 4-step schedule
    gives its detector only steps 2 and 4 (400 + 200 of 800) and an RPN re-fitted in 80 steps to
    the detector's convs: far worse here. Better-matched anchors tighten the RPN's boxes on
    seed 0 (AP75 equal to the fast arm's) but not on seed 1. Recall of the anchors-10-28 runs
    (benchmarks/rcnn_proposal_recall.py; seed 0 / seed 1) at IoU 0.5 / 0.7 / 0.8 / 0.9:
        fixed, ~494 per image          0.979 / 0.725 / 0.576 / 0.333
        all anchors (no RPN)           0.997 / 0.896 / 0.336 / 0.040
        RPN top 300, seed 0            0.960 / 0.813 / 0.349 / 0.011
        RPN top 300, seed 1            0.963 / 0.819 / 0.339 / 0.032
    the RPN's regression hardly moves its anchors (R@0.8 0.336 -> 0.34-0.35) where the fixed
    set holds a tight box for 58 % of the objects at 0.8; and now the detector trained on the
    RPN's proposals is the better one ON them: the faster arm's head scores 0.245 / 0.214 on its
    own 300 and 0.217 / 0.196 on the fixed ones (the fast arm: 0.248 / 0.247 on the fixed).
    The RPN's smooth L1 with the released code's σ = 3 (`rpn.beta=0.1111`, so small anchor
    deltas get an L1-sized gradient), on top of anchors 10-28: faster 0.246 (AP50 0.473, AP75
    0.228) / 0.213 (0.435, 0.174), faster − fast −0.2 / −3.4 points, 287 / 288 s: no change.
    So with one shared pre-trained start the three detectors are within noise of each other
    (faster − fast −1.2, −0.0, −0.25, −1.0, −3.3, −0.2, −3.4 points over seven runs), never
    the +2 the check asks; R-CNN and both Fast R-CNN checks keep passing in every run (fast −
    rcnn −1.2 … +2.1 points, 6.3-10.7x faster). The MINI is unchanged (it does not reproduce
    either way, and the pre-trained one costs 283-312 s of CPU): Faster R-CNN NOT reproduced.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from papercli.errors import UsageError
from papercli.methods.region_proposals import fixed_proposals
from papercli.methods.region_training import (
    RoITraining,
    RPNTraining,
    box_loss,
    mask_loss,
    rpn_loss,
    sample_rois,
)
from papercli.methods.roi import rois_from
from papercli.models.rcnn import MINI as MINI_DETECTOR
from papercli.models.rcnn import DetectorConfig, build, detections, masks_for
from papercli.recipes._detection import DetectionConfig, DetectionRecipe
from papercli.reproduce.arms import Arms
from papercli.reproduce.config import bounded, fraction
from papercli.reproduce.engine import run

# the mini backbone without its second pool: a stride-2 map, on which a 12-32 px object spans
# 6-16 cells (3-8 at stride 4, too coarse for RoI pooling's 7x7 grid, see the docstring)
MINI_STRIDE2 = (16, "M", 32, 32, 32)
KINDS = {"rcnn": "rcnn", "fast": "fast", "faster": "faster"}  # arm name -> detector kind


@dataclass
class RCNNConfig(DetectionConfig):
    arms: tuple[str, ...] = ("rcnn", "fast", "faster")
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    optimizer: str = "sgd"  # sgd (the papers) | adamw (from scratch at mini scale)
    lr: float = bounded(1e-3, gt=0.0)
    momentum: float = fraction(0.9)
    weight_decay: float = bounded(5e-4, ge=0.0)
    lr_drop_step: int = bounded(0, ge=0)  # lr x 0.1 from this step on (0 = never)
    rpn: RPNTraining = RPNTraining()
    roi: RoITraining = RoITraining()
    train_pre_nms: int = bounded(12000, ge=1)  # RPN boxes kept before NMS when training …
    train_proposals: int = bounded(2000, ge=1)  # … and after it (Sec. 3.3)
    test_pre_nms: int = bounded(6000, ge=1)
    test_proposals: int = bounded(300, ge=1)  # RPN proposals per test image (Table 2: 300)
    nms_iou: float = fraction(0.3)  # per-class NMS of the final detections
    roi_chunk: int = bounded(4096, ge=1)  # R-CNN: regions per CNN pass at test time (memory)
    # the RPN's loss reaches the shared convolutions (approximate joint training, Sec. 3.2) or
    # only the RPN's own layers, the shared ones trained by the detector alone (the state
    # 4-step alternating training ends in: steps 3-4 fix the shared layers, Sec. 3.2)
    rpn_trains_backbone: bool = True
    # every arm starts from ONE set of backbone and fc6/fc7 weights, as the papers' detectors all
    # start from the same ImageNet-pretrained VGG-16 (R-CNN Sec. 2.3, Fast R-CNN Sec. 2.2, Faster
    # R-CNN Sec. 3.2): else each arm draws its own init, and the build order moves an arm's mAP
    shared_init: bool = False
    # that start is first pre-trained this many steps on item classification (0 = from scratch):
    # the training split's single photos, 10-way softmax on fc7 — ImageNet pre-training's stand-in
    pretrain_steps: int = bounded(0, ge=0)
    pretrain_batch: int = bounded(128, ge=1)
    # how the faster arm trains its RPN and detector (Sec. 3.2): "joint" (approximate joint
    # training, one loss sum per step) or "alternating" (4-step alternating training): the step
    # fractions at which steps 2, 3 and 4 begin (see `alternating_phase`)
    rpn_training: Literal["joint", "alternating"] = "joint"
    alternating: tuple[float, float, float] = (0.2, 0.7, 0.8)


PAPER = RCNNConfig(
    dataset="coco",
    canvas=800,
    steps=320_000,
    batch_size=2,
    eval_every=40_000,
    log_every=100,
    test_images=5000,
    detector=DetectorConfig(in_channels=3),
    lr_drop_step=240_000,
    roi=RoITraining(per_image=128),
)
MINI = RCNNConfig(
    steps=900,  # 300 left every arm under its floor (rcnn 0.115, fast 0.111, faster 0.068 mAP)
    batch_size=4,  # 4 images x 32 RoIs: 128 RoIs per step, the papers' mini-batch (see above)
    eval_every=900,  # one evaluation: R-CNN's per-region test passes are most of an evaluation
    log_every=50,
    train_images=3200,
    test_images=150,
    clutter=10,  # dim photo fragments behind the objects: bottom-up proposals get imperfect
    clutter_contrast=0.5,
    detector=DetectorConfig(**{**MINI_DETECTOR, "conv_layers": MINI_STRIDE2}),
    optimizer="adamw",
    lr=1e-3,
    weight_decay=1e-4,
    lr_drop_step=675,
    # 32x32 = 1024 anchor locations and 64 sampled anchors per image: λ = 16 keeps Eq. 1's two
    # terms as balanced as the paper's λ = 10 with ~2400 locations and 256 samples
    rpn=RPNTraining(batch=64, weight=16.0),
    roi=RoITraining(per_image=32),
    train_pre_nms=300,
    train_proposals=100,
    test_pre_nms=1000,
    test_proposals=300,  # Table 2's RPN 300
)


class RCNNRecipe(DetectionRecipe):
    paper = "faster-rcnn"
    config_class = RCNNConfig
    scales = {"mini": MINI, "paper": PAPER}
    cfg: RCNNConfig
    arm_kinds = KINDS

    # --- model ----------------------------------------------------------------------------------
    def arm_config(self, name: str) -> DetectorConfig:
        return replace(
            self.cfg.detector,
            kind=self.arm_kinds[name],
            num_classes=self.num_classes,
            in_channels=self.in_channels,
        )

    def build_model(self) -> nn.Module:
        unknown = [a for a in self.cfg.arms if a not in self.arm_kinds]
        if unknown or not self.cfg.arms:
            raise UsageError(
                f"--set arms: unknown {', '.join(unknown) or '(none given)'} "
                f"(choose from {', '.join(self.arm_kinds)})"
            )
        start = self.initial_weights() if self.cfg.shared_init else None
        arms = {name: build(self.arm_config(name)) for name in self.cfg.arms}
        for arm in arms.values() if start is not None else ():
            arm.backbone.load_state_dict(start.backbone.state_dict())
            arm.head.load_state_dict(start.head.state_dict())
        # 4-step training's step 2 starts a new detector from the pre-trained weights again: keep
        # them for the arms that alternate (those with an RPN), and only when training alternates
        alternates = self.cfg.rpn_training == "alternating"
        self.start_backbones = {
            n: copy.deepcopy(a.backbone.state_dict())
            for n, a in arms.items()
            if alternates and getattr(a, "rpn", None) is not None
        }
        self.proposers: dict[str, nn.Module] = {}  # step 2: step 1's frozen network, per arm
        return Arms(arms)

    def initial_weights(self) -> nn.Module:
        """The backbone and box head every arm starts from: one detector built before the arms
        (so no arm's init depends on the others'), pre-trained as a classifier when asked."""
        start = build(replace(self.arm_config(self.cfg.arms[0]), kind="fast"))
        if self.cfg.pretrain_steps and not next(start.parameters()).is_meta:
            self.pretrain_accuracy = pretrain(start, self.cfg, self.num_classes, self.ctx)
        return start

    def configure_optimizers(self, model: nn.Module):
        c = self.cfg
        out = {}
        for name, arm in model.items():
            if c.optimizer == "adamw":
                opt = torch.optim.AdamW(arm.parameters(), lr=c.lr, weight_decay=c.weight_decay)
            else:  # Fast R-CNN Sec. 2.3 / Faster R-CNN Sec. 3.1.3: momentum 0.9, decay 5e-4
                opt = torch.optim.SGD(
                    arm.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
                )
            drops = [c.lr_drop_step] if c.lr_drop_step else []
            out[name] = (opt, torch.optim.lr_scheduler.MultiStepLR(opt, drops, gamma=0.1))
        self.optimizers = {name: opt for name, (opt, _) in out.items()}
        return out

    # --- proposals ------------------------------------------------------------------------------
    def fixed(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The selective-search stand-in's boxes for each image (of its mean channel)."""
        grey = images.float().mean(1).cpu().numpy()
        return [torch.from_numpy(fixed_proposals(np.clip(g, 0, 1))).to(images.device) for g in grey]

    # --- training -------------------------------------------------------------------------------
    def train_batch(self, step: int, micro: int = 0):
        """The base's images and targets, the fixed proposals of every (flipped) image, and the
        seed of this micro-batch's sampling draws (the same draws for every arm)."""
        x, targets = super().train_batch(step, micro)
        needs_fixed = any(self.arm_kinds[a] != "faster" for a in self.cfg.arms)
        return x, targets, self.fixed(x) if needs_fixed else None, (step, self.ctx.shard(micro))

    def alternating_phase(self, step: int) -> int:
        """Which step of Sec. 3.2's 4-step alternating training `step` is in (0 = joint):
        1 trains the RPN (and the shared convs) alone; 2 trains a detector started anew from
        the pre-trained weights on the proposals of step 1's frozen network; 3 fixes the shared
        convs (now the detector's) and fine-tunes the RPN's own layers; 4 keeps them fixed and
        fine-tunes the detector's head on the proposals of that RPN."""
        if self.cfg.rpn_training == "joint":
            return 0
        return 1 + sum(step >= f * self.cfg.steps for f in self.cfg.alternating)

    def loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, targets, fixed, (step, shard) = batch
        phase = self.alternating_phase(step)
        losses: dict[str, torch.Tensor] = {}
        for name, arm in model.items():
            g = self.ctx.generator(step, stream=1000 + shard)
            # only a Faster R-CNN arm trains in 4 steps: the others have no RPN to alternate with
            arm_phase = phase if getattr(arm, "rpn", None) is not None else 0
            proposer = self.proposer(name, arm) if arm_phase == 2 else None
            arm_losses = self.arm_loss(arm, images, targets, fixed, g, arm_phase, proposer)
            for key, value in arm_losses.items():
                losses[f"{name}_{key}"] = value
        return losses

    def proposer(self, name: str, arm: nn.Module) -> nn.Module:
        """Step 2's proposal network: at its first step, a frozen copy of step 1's shared convs
        (the RPN reads them), and the arm's own convs restart from the pre-trained weights with
        fresh optimizer moments — Sec. 3.2's "separate detection network" initialised anew."""
        if name not in self.proposers:
            self.proposers[name] = copy.deepcopy(arm.backbone).requires_grad_(False)
            arm.backbone.load_state_dict(self.start_backbones[name])
            opt = getattr(self, "optimizers", {}).get(name)
            for p in arm.backbone.parameters() if opt is not None else ():
                opt.state.pop(p, None)
        return self.proposers[name]

    def state_dict(self) -> dict:
        return {"proposers": {n: p.state_dict() for n, p in self.proposers.items()}}

    def load_state_dict(self, state: dict) -> None:
        """A run resumed within step 2 gets back step 1's frozen convs."""
        for name, weights in (state.get("proposers") or {}).items():
            backbone = build(self.arm_config(name)).backbone
            backbone.load_state_dict(weights)
            self.proposers[name] = backbone.to(self.ctx.device).requires_grad_(False)

    def arm_loss(
        self, arm, images, targets, fixed, g, phase: int = 0, proposer: nn.Module | None = None
    ) -> dict[str, torch.Tensor]:
        """The arm's losses; `phase` 1-4 is the step of 4-step alternating training (0: joint),
        and the losses a step does not train are reported as 0."""
        c = self.cfg
        with torch.set_grad_enabled(torch.is_grad_enabled() and phase < 3):
            shared = arm.shared(images)  # steps 3-4 fix the shared convs
        out: dict[str, torch.Tensor] = {}
        if getattr(arm, "rpn", None) is not None:
            if phase in (2, 4):  # the detector learns from a fixed RPN: step 1's network in
                # step 2, the RPN on the (fixed) shared convs in step 4
                with torch.no_grad():
                    scores, deltas, anchors = arm.rpn_forward(
                        proposer(images) if phase == 2 else shared
                    )
                zero = images.new_zeros(())
                out |= {"rpn_cls": zero, "rpn_reg": zero}
            else:
                rpn_in = shared if c.rpn_trains_backbone else [m.detach() for m in shared]
                scores, deltas, anchors = arm.rpn_forward(rpn_in)
                locations = sum(
                    m.shape[-2] * m.shape[-1] for m in shared[: len(c.detector.anchor_sizes)]
                )
                gt = [t["boxes"] for t in targets]
                out |= rpn_loss(scores, deltas, anchors, gt, locations, c.rpn, g)
            if phase in (1, 3):  # steps 1 and 3 train the RPN alone
                zero = images.new_zeros(())
                return out | {"cls": zero, "loc": zero}
            proposals = arm.propose(
                scores, deltas, anchors, images.shape[-2:], c.train_pre_nms, c.train_proposals
            )
        else:
            proposals = fixed
        return out | self.head_loss(arm, shared, proposals, targets, g)

    def head_loss(self, arm, shared, proposals, targets, g) -> dict[str, torch.Tensor]:
        """Fast R-CNN's multi-task loss (Eq. 1) on RoIs sampled from `proposals` (+ mask loss)."""
        rois = sample_rois(proposals, targets, self.cfg.roi, g)
        logits, deltas = arm.box_forward(shared, rois.rois)
        out = box_loss(logits, deltas, rois, self.cfg.roi.weight)
        if getattr(arm, "mask_head", None) is not None:
            out["mask"] = mask_loss(arm.mask_forward(shared, rois.rois), rois, targets)
        return out

    # --- inference ------------------------------------------------------------------------------
    def detect(self, name: str, model: nn.Module, images: torch.Tensor) -> list[dict]:
        c = self.cfg
        size = tuple(images.shape[-2:])
        shared = model.shared(images)
        if getattr(model, "rpn", None) is not None:
            proposals = model.propose(
                *model.rpn_forward(shared), size, c.test_pre_nms, c.test_proposals
            )
        else:
            proposals = self.fixed(images)
        self._count(name, proposals)
        rois = rois_from(proposals).to(images.device)
        pieces = [model.box_forward(shared, r) for r in rois.split(c.roi_chunk)]
        logits = torch.cat([p[0] for p in pieces])
        deltas = torch.cat([p[1] for p in pieces])
        found = detections(
            rois, logits, deltas, len(images), size, c.score_threshold, c.nms_iou, c.max_detections
        )
        if getattr(model, "mask_head", None) is not None:
            masks_for(model, shared, found, size)
        for f in found:
            del f["rois"]
        return found

    def _count(self, name: str, proposals: list[torch.Tensor]) -> None:
        """Proposals per image seen at test time, per arm (for the 'far fewer' claim)."""
        counts = getattr(self, "proposal_counts", {})
        total, images = counts.get(name, (0, 0))
        counts[name] = (total + sum(len(p) for p in proposals), images + len(proposals))
        self.proposal_counts = counts

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self.proposal_counts = {}
        metrics = super().evaluate(model)
        for name, (total, images) in self.proposal_counts.items():
            metrics[f"{name}_proposals_per_image"] = total / max(images, 1)
        return metrics

    def final_metrics(self, model: nn.Module, last_eval: dict[str, float]) -> dict[str, float]:
        m = dict(last_eval)
        if hasattr(self, "pretrain_accuracy"):
            m["pretrain_accuracy"] = self.pretrain_accuracy
        if "rcnn" in model and "fast" in model:
            m["fast_speedup_vs_rcnn"] = m["rcnn_ms_per_image"] / m["fast_ms_per_image"]
            m["fast_minus_rcnn_map"] = m["fast_map"] - m["rcnn_map"]
        if "fast" in model and "faster" in model:
            m["faster_minus_fast_map"] = m["faster_map"] - m["fast_map"]
        return m


def pretrain(detector: nn.Module, c: RCNNConfig, num_classes: int, ctx) -> float:
    """Supervised pre-training of `detector`'s backbone and fc6/fc7 (R-CNN Sec. 2.3: the CNN is
    first trained on ImageNet classification, then fine-tuned for detection with a new (K + 1)-way
    output layer): single item photos of the TRAINING split (the scenes' own source; no test
    photo), resized to a random side in the scenes' object range per batch, through the backbone,
    a max pool to the head's grid (as R-CNN's warped regions) and fc6/fc7, into a K-way softmax
    that is then dropped (fc8's role). Returns the accuracy on the last 10 batches."""
    from papercli.data.scenes import item_source

    data, _ = item_source(c.items, ctx.data_path)
    photos = torch.tensor(data["train_x"], dtype=torch.float32).div(255)[:, None]
    labels = torch.from_numpy(data["train_y"].astype(np.int64))
    g = torch.Generator().manual_seed(1_000_003 * ctx.seed + 11)
    detector.to(ctx.device)
    fc8 = nn.Linear(c.detector.hidden, num_classes).to(ctx.device)
    head = detector.head
    params = [*detector.backbone.parameters(), *head.fc6.parameters(), *head.fc7.parameters()]
    opt = torch.optim.AdamW([*params, *fc8.parameters()], lr=c.lr, weight_decay=c.weight_decay)
    correct = seen = 0
    for step in range(c.pretrain_steps):
        pick = torch.randint(len(photos), (c.pretrain_batch,), generator=g)
        side = int(torch.randint(c.min_size, c.max_size + 1, (1,), generator=g))
        x = F.interpolate(photos[pick], size=(side, side), mode="bilinear", antialias=True)
        grid = F.adaptive_max_pool2d(detector.backbone(x.to(ctx.device))[0], c.detector.pool_size)
        h = head.dropout(F.relu(head.fc6(grid.flatten(1))))
        logits = fc8(head.dropout(F.relu(head.fc7(h))))
        y = labels[pick].to(ctx.device)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= c.pretrain_steps - 10:
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
    return correct / max(seen, 1)


if __name__ == "__main__":
    run(RCNNRecipe)
