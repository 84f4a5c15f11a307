"""Keep-fraction arithmetic and pruned text."""

from __future__ import annotations

import pytest
import torch

from exact.keep import check_keep_fraction, keep_key, kept_indices, n_deletions, n_kept
from exact.pruner import token_renderer


def test_n_kept_is_floor_and_robust_to_float_error():
    assert n_kept(10, 0.5) == 5
    assert n_kept(7, 0.5) == 3
    assert n_kept(100, 0.29) == 29  # 100 * 0.29 == 28.999999999999996
    assert n_kept(80, 0.7) == 56
    assert n_kept(5, 1.0) == 5
    assert n_kept(3, 0.1) == 0


@pytest.mark.parametrize("bad", [0, -0.1, 1.01, 2])
def test_keep_fraction_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match=r"keep fraction must be in \(0, 1\]"):
        check_keep_fraction(bad)


def test_deletions_reach_the_smallest_fraction():
    assert n_deletions(10, [0.9, 0.5, 0.7]) == 5
    assert n_deletions(10, [0.5], to_end=True) == 10
    with pytest.raises(ValueError, match="at least one keep fraction"):
        n_deletions(10, [])


def test_kept_indices_are_prefixes_of_one_order():
    order = [4, 0, 2, 1]
    assert kept_indices(5, order, 1.0) == [0, 1, 2, 3, 4]
    assert kept_indices(5, order, 0.6) == [1, 2, 3]
    assert kept_indices(5, order, 0.2) == [3]
    with pytest.raises(ValueError, match="needs 5 deletions but only 4"):
        kept_indices(5, order, 0.1)


def test_keys_and_text(tokenizer):
    assert keep_key(0.5) == "0.5" and keep_key(1) == "1"
    ids = torch.tensor(tokenizer("abcde", add_special_tokens=False)["input_ids"])
    render = token_renderer(tokenizer, ids)
    assert render(kept_indices(5, [4, 0, 2, 1], 0.6)) == "bcd"
