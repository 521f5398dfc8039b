"""Decoding: greedy decoding and the inference job (trie-constrained beam search and sampling build on them)."""
