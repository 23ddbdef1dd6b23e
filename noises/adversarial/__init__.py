"""Adversarial attacks (torchattacks-based)."""
