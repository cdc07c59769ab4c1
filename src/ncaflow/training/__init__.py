"""Training: the loop (:mod:`~ncaflow.training.train`), resuming a run
(:mod:`~ncaflow.training.resume`), checkpoints (:mod:`~ncaflow.training.checkpoint`),
the output-folder lock (:mod:`~ncaflow.training.lock`) and TensorBoard
(:mod:`~ncaflow.training.board`)."""
