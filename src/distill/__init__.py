"""Teacher → pruner → student distillation: length matching, student SFT, evaluation and the results table."""
