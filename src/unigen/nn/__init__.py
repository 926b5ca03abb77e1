"""Core transformer blocks: attention and masks, positions (sinusoidal, learned, rotary), norms, activations/MLPs.

Other blocks (linear attention, GAU, relative biases, residual wrappers, init, embeddings) live in their own
submodules and are imported from there.
"""
from unigen.nn.activations import ACTIVATIONS, GLU, GLU_VARIANTS, FeedForward, make_mlp
from unigen.nn.attention import Attention, KVCache, causal_mask, combine_masks, padding_mask, peeking
from unigen.nn.norm import LayerNorm, RMSNorm, modulate
from unigen.nn.position import (AxialRotaryEmbedding2D, LearnedPositions, Rope, RotaryEmbedding,
                                SinusoidalPositions, apply_rope, half_to_interleaved, head_dim_permutation,
                                interleaved_to_half, sinusoidal_embedding)

__all__ = [
    "ACTIVATIONS", "GLU", "GLU_VARIANTS", "FeedForward", "make_mlp",
    "Attention", "KVCache", "causal_mask", "combine_masks", "padding_mask", "peeking",
    "LayerNorm", "RMSNorm", "modulate",
    "AxialRotaryEmbedding2D", "LearnedPositions", "Rope", "RotaryEmbedding", "SinusoidalPositions", "apply_rope",
    "half_to_interleaved", "head_dim_permutation", "interleaved_to_half", "sinusoidal_embedding",
]
