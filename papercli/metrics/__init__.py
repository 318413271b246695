"""Evaluation metrics shared by recipes, each tested on its own.

classification  accuracy, mean cross-entropy
segmentation    foreground IoU, object-level F1, adapted Rand error (ISBI 2012)
Planned homes for what the next recipe families need: perplexity/bits per byte (language),
BLEU via sacrebleu (translation), Fréchet distance via scipy (generative), COCO mAP via
pycocotools or faster-coco-eval (detection).
"""
