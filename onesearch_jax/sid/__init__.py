"""Semantic IDs: embeddings -> keyword fusion -> residual k-means + OPQ -> codebook and trie."""
