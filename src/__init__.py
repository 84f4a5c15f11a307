"""The pipeline around the pruners: models, data, runs, tracking and the Hydra entry point."""
