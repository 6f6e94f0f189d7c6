"""Backbones from `transformers` and the heads fine-tuned on top of them."""
