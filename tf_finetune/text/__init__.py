"""Text in the graph: tokenizers, packing and word splitting."""
