"""Surrogate-accelerated pruning: attention features, the Pearson-trained surrogate, and the hybrid scorer."""
