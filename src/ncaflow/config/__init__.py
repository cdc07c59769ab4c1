"""Configuration: dataclasses built from YAML/JSON with strict, user-facing errors.

A leaf of the package: it imports nothing else of ncaflow.
"""

from ncaflow.config.run import (
    CONFIG_VERSION,
    RANGES,
    CascadeConfig,
    ConfigError,
    EarlyStoppingConfig,
    ModelConfig,
    Range,
    RunConfig,
    SchedulerConfig,
    TrainConfig,
    apply_override,
    build_config,
    check,
    check_ranges,
    from_dict,
    load_config,
    parse_override,
    read_yaml,
    to_dict,
)

__all__ = [
    "CONFIG_VERSION",
    "RANGES",
    "CascadeConfig",
    "ConfigError",
    "EarlyStoppingConfig",
    "ModelConfig",
    "Range",
    "RunConfig",
    "SchedulerConfig",
    "TrainConfig",
    "apply_override",
    "build_config",
    "check",
    "check_ranges",
    "from_dict",
    "load_config",
    "parse_override",
    "read_yaml",
    "to_dict",
]
