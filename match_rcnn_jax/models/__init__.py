"""Flax modules: ResNet, FPN, RPN, box / mask / landmark heads, matching network, Match R-CNN."""
