"""Training: ``config`` (the typed run configuration, YAML with ``_base_`` and ``--set`` overrides),
``presets`` (the shipped presets by name), ``schedules`` (learning rate per epoch), ``step`` (one optimisation
step and its hooks), ``trainer`` (the loop, its evaluations and the run folder), ``checkpoint`` (atomic
checkpoints and the latest loadable one), ``distributed`` (``torchrun``) and ``runlog`` (metrics files,
TensorBoard, curves, env.json). Using a trained model is ``reidkit.inference``."""
