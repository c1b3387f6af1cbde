"""Sizes the trainer's torch modules and its torch-free planner (trainer/plan) must agree on."""

from __future__ import annotations

# The Jacobian metric builds an n x n Gram matrix per config; past this n it is skipped (trainer/metrics.py).
JACOBIAN_MAX_SAMPLES = 4096
# Deep nets are evaluated in batches of this many samples (trainer/deep/learner.py).
EVAL_BATCH = {"mlp": 4096, "resnet18": 500}
# ResNet-18 takes the ImageNet stem (7x7 conv stride 2, max-pool) from this image size up, else the CIFAR stem.
IMAGENET_STEM_MIN_SIZE = 64
