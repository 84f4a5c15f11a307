"""Jobs that `src.run` dispatches to: one module per task, each with `run(cfg)`."""
