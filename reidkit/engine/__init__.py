"""Training and inference engine: configs, schedules, checkpoints, distributed setup, trainer, feature extraction."""
