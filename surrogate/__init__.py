"""Surrogate-accelerated pruning: an attention-feature model that predicts post-deletion likelihoods.

Not built yet; the exact pruner in `exact/` produces its training labels (`pruner.record_scores=true`).
"""
