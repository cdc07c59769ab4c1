"""The package's face: the names of ``ncaflow.__all__`` are what they say, every time."""

import inspect

import ncaflow


def test_the_functions_stay_functions_after_their_modules_are_imported() -> None:
    for name in ("train", "evaluate", "predict"):
        first = getattr(ncaflow, name)  # imports the module that defines it
        second = getattr(ncaflow, name)  # the README calls ncaflow.predict(...) twice
        assert inspect.isfunction(first), name
        assert second is first, name


def test_every_public_name_resolves() -> None:
    for name in ncaflow.__all__:
        assert getattr(ncaflow, name) is not None, name
