"""Using a saved model: metrics on a task's split (:mod:`~ncaflow.inference.evaluate`)
and predictions for image files (:mod:`~ncaflow.inference.predict`)."""
