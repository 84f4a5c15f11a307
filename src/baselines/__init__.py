"""The paper's comparison methods as pruners with the greedy pruner's interface and record schema.

TokenSkip (LLMLingua-2 word keep-probabilities), H2O (attention received), Surprisal (−log p) and
Uniform (seeded random). `build_baseline(cfg)` makes the one `cfg.pruner.name` asks for.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from exact.pruner import encode_instance, token_renderer
from src.baselines.ranking import Ranking, RankingPruner
from src.baselines.token_scores import h2o_scores, surprisal_scores, uniform_scores

BASELINES = ("tokenskip", "h2o", "surprisal", "uniform")
OBJECTIVES = {
    "h2o": "attention_received",
    "surprisal": "surprisal",
    "uniform": "random",
    "tokenskip": "keep_probability",
}


def token_ranker(method: str, model, tokenizer, cfg: DictConfig):
    """A ranker over the pruner's reasoning tokens, encoded exactly as the greedy pruner encodes them."""
    data = cfg.data

    def rank(question: str, reasoning: str, answer: str, record_id: str) -> Ranking:
        segments = encode_instance(
            tokenizer, question, reasoning, answer, data.system_prompt, data.answer_delimiter, data.max_reasoning_tokens
        )
        n = len(segments.reasoning)
        if method == "uniform":
            scores, cost = uniform_scores(n, cfg.pruner.seed, record_id), {"tokens_processed": 0, "forward_passes": 0}
        else:
            score = h2o_scores if method == "h2o" else surprisal_scores
            scores = score(model, segments)
            cost = {"tokens_processed": n + len(segments.prompt) + len(segments.answer), "forward_passes": 1}
        units = [tokenizer.decode([t]) for t in segments.reasoning.tolist()]
        return Ranking(units, scores, token_renderer(tokenizer, segments.reasoning), cost)

    return rank


def tokenskip_ranker(classifier, classifier_tokenizer, cfg: DictConfig):
    """A ranker over the words of the reasoning, by LLMLingua-2's keep probability."""
    from src.baselines.tokenskip import word_keep_probs, words

    def rank(question: str, reasoning: str, answer: str, record_id: str) -> Ranking:
        spans = words(reasoning)
        probs = word_keep_probs(classifier, classifier_tokenizer, reasoning, cfg.pruner.window, cfg.pruner.batch_size)

        def render(kept: list[int]) -> str:
            return "".join(reasoning[spans[i][0] : spans[i][1]] for i in kept).lstrip()

        units = [reasoning[s:e] for s, e in spans]
        return Ranking(units, torch.tensor(probs, dtype=torch.float64), render)

    return rank


def build_baseline(cfg: DictConfig, model=None, tokenizer=None) -> RankingPruner:
    """The baseline `cfg.pruner.name`; token-level ones use `cfg.model` (or the given model) as the pruner LM."""
    from src.models import load_model

    method = cfg.pruner.name
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; expected one of {BASELINES}")
    if method == "tokenskip":
        from src.baselines.tokenskip import load_classifier

        classifier, classifier_tokenizer = load_classifier(cfg.pruner.classifier, cfg.pruner.device)
        rank = tokenskip_ranker(classifier, classifier_tokenizer, cfg)
        return RankingPruner(method, OBJECTIVES[method], rank, cfg.pruner.classifier, classifier_tokenizer)
    if model is None:
        attention = "eager" if method == "h2o" else cfg.model.attn_implementation
        model, tokenizer = load_model(**{**cfg.model, "attn_implementation": attention})
    rank = token_ranker(method, model, tokenizer, cfg)
    return RankingPruner(method, OBJECTIVES[method], rank, cfg.model.path, tokenizer)
