"""The automaton itself, with nothing task-specific and nothing about backends:
perception (:mod:`~ncaflow.model.perception`), the NCA and its update rule
(:mod:`~ncaflow.model.nca`), cascades and ``build_model`` (:mod:`~ncaflow.model.cascade`),
uncertainty from its stochastic updates (:mod:`~ncaflow.model.uncertainty`)."""
