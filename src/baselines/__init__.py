"""The paper's comparison methods as pruners with the greedy pruner's interface and record schema.

TokenSkip (LLMLingua-2 word keep-probabilities), H2O (attention received), Surprisal (−log p) and
Uniform (seeded random); each is one class and one config in conf/pruner/.
"""
