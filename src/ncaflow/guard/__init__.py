"""What someone else's file or config asks for, checked before it is used: a model's two
files, saved atomically and verified on load (:mod:`~ncaflow.guard.io`), and the memory a
size would take, refused before allocation (:mod:`~ncaflow.guard.limits`). It stands above
``tasks``: checking a model file builds the model its task describes."""
