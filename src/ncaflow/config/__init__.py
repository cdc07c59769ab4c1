"""Configuration: dataclasses built from YAML/JSON with strict, user-facing errors.

A leaf of the package (it imports nothing else of ncaflow):

- :mod:`~ncaflow.config.run`: the run config's dataclasses, each number's range beside it;
- :mod:`~ncaflow.config.checks`: :class:`ConfigError`, :func:`check` and the ranges;
- :mod:`~ncaflow.config.parse`: YAML files, ``key=value`` overrides, mappings to dataclasses.

A whole run config, checked against its task, is read by
:func:`ncaflow.tasks.runconfig.load_config`.
"""

from ncaflow.config.checks import (
    AT_LEAST_0,
    AT_LEAST_1,
    FRACTION,
    MAX_SIDE,
    MAX_STEPS,
    POSITIVE,
    ConfigError,
    Range,
    check,
    check_ranges,
    range_of,
    ranged,
    short,
)
from ncaflow.config.parse import (
    from_dict,
    parse_override,
    read_yaml,
    set_key,
    to_dict,
)
from ncaflow.config.run import (
    CONFIG_VERSION,
    AdaptiveStepsConfig,
    CascadeConfig,
    EarlyStoppingConfig,
    ModelConfig,
    RunConfig,
    SchedulerConfig,
    TrainConfig,
)

__all__ = [
    "AT_LEAST_0",
    "AT_LEAST_1",
    "CONFIG_VERSION",
    "FRACTION",
    "MAX_SIDE",
    "MAX_STEPS",
    "POSITIVE",
    "AdaptiveStepsConfig",
    "CascadeConfig",
    "ConfigError",
    "EarlyStoppingConfig",
    "ModelConfig",
    "Range",
    "RunConfig",
    "SchedulerConfig",
    "TrainConfig",
    "check",
    "check_ranges",
    "from_dict",
    "parse_override",
    "range_of",
    "ranged",
    "read_yaml",
    "set_key",
    "short",
    "to_dict",
]
