"""Natural corruptions (ImageNet-C family)."""
