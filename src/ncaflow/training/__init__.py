"""Training: the loop (:mod:`~ncaflow.training.train`), resuming, checkpoints, the
output-folder lock and the TensorBoard board."""
