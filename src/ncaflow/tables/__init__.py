"""The workflow's result tables: a task's grid cells over folds
(:mod:`~ncaflow.tables.aggregate`, the ``aggregate`` rule) and the README's reference-run
tables (:mod:`~ncaflow.tables.reference`, the ``reference`` rules). Only the workflow (and
its ``ncaflow aggregate`` command) uses them."""
