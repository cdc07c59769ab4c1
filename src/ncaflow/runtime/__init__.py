"""Where a run meets its machine, below everything but ``config``: files written without
following a planted link and text that cannot hijack a terminal
(:mod:`~ncaflow.runtime.safe_io`), CPU kernels that give the same bytes on any x86-64 CPU
(:mod:`~ncaflow.runtime.reproducible`), and GPU slots for several jobs per GPU
(:mod:`~ncaflow.runtime.gpuslots`, ``python -m ncaflow.runtime.gpuslots``)."""
