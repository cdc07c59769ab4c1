"""Configuration: dataclasses built from YAML/JSON with strict, user-facing errors.

Every hyperparameter lives in exactly one dataclass field here (or in a task's
``DataConfig``); YAML files, the CLI and the workflow all flow through
:func:`from_dict`, which rejects unknown keys and wrong types with a message
naming the file and the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

__all__ = [
    "CONFIG_VERSION",
    "MAX_SIDE",
    "MAX_STEPS",
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
    "short",
    "to_dict",
]

CONFIG_VERSION = 1

Padding = Literal["zeros", "reflect", "replicate", "circular"]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; ``key`` is the dotted key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and dynamics of one NCA.

    The state has ``input + output + hidden`` channels in that order. Input
    channels (e.g. the image to classify) are frozen: updates never touch them.
    """

    input_channels: int = 0
    output_channels: int = 4
    hidden_channels: int = 12
    hidden_width: int = 128
    perception: str = "sobel"  # a fixed bank of ncaflow.perception.BANKS, or "learned"
    learned_filters: int = 2
    kernel_size: int = 3
    padding: Padding = "zeros"
    fire_rate: float = 0.5
    alive_channel: int | None = None
    alive_threshold: float = 0.1
    head: int = 0  # > 0: a linear head from the mean hidden state to this many logits

    @property
    def channels(self) -> int:
        return self.input_channels + self.output_channels + self.hidden_channels

    def validate(self, where: str = "model") -> None:
        """Relations between keys; the range of each number is in RANGES."""
        check(self.output_channels + self.hidden_channels > 0, where, "no updatable channels")
        check(self.kernel_size % 2 == 1, f"{where}.kernel_size", "must be odd")
        from ncaflow.perception import BANKS, LEARNED

        names = sorted([*BANKS, LEARNED])
        check(self.perception in names, f"{where}.perception", f"must be one of {names}")
        if self.alive_channel is not None:
            check(
                0 <= self.alive_channel < self.channels,
                f"{where}.alive_channel",
                f"must index a state channel (0..{self.channels - 1}) or be null",
            )


@dataclass(frozen=True, kw_only=True)
class CascadeConfig:
    """Coarse-to-fine schedule: run ``steps[i]`` steps at ``1/scales[i]`` resolution."""

    scales: list[int] = field(default_factory=lambda: [4, 2, 1])
    steps: list[int] = field(default_factory=lambda: [16, 16, 16])
    shared: bool = False

    def validate(self, where: str = "cascade") -> None:
        check(len(self.scales) == len(self.steps), where, "scales and steps differ in length")
        check(
            self.scales == sorted(self.scales, reverse=True),
            f"{where}.scales",
            "must be coarse to fine",
        )


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    name: Literal["constant", "multistep", "cosine", "exponential"] = "constant"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup: int = 0


@dataclass(frozen=True, kw_only=True)
class EarlyStoppingConfig:
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = 0  # evaluations without improvement; 0 disables early stopping
    min_delta: float = 0.0


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    iterations: int = 2000
    batch_size: int = 8
    steps: list[int] = field(default_factory=lambda: [64, 96])  # [n] fixed, [lo, hi] sampled
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    grad_clip: float | None = None
    grad_norm: bool = False  # Distill: normalise each parameter's gradient to unit L2
    gradient_checkpointing: bool = False
    cuda_graphs: bool = (
        True  # CUDA + Adam/AdamW: replay iterations as graphs (ncaflow.backends.graphs)
    )
    eval_every: int = 100
    checkpoint_every: int = 100
    log_images_every: int = 500
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    finetune_from: str | None = None  # a saved model to start from
    trainable: Literal["all", "last"] = "all"  # "last": only the last update layer (and head)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    # CPU kernels that give the same bytes on any x86-64 CPU (ncaflow.reproducible)
    reproducible: bool = False  # +31-51 % CPU time per job (benchmarks/README.md)

    def validate(self, where: str = "train") -> None:
        """Relations between keys; the range of each number is in RANGES."""
        check(len(self.steps) in (1, 2), f"{where}.steps", "give [n] or [min, max]")
        check(self.steps[0] <= self.steps[-1], f"{where}.steps", "min must be <= max")
        check(len(self.betas) == 2, f"{where}.betas", "give two numbers")
        milestones = self.scheduler.milestones
        check(
            milestones == sorted(milestones),
            f"{where}.scheduler.milestones",
            f"{milestones} must be in increasing order",
        )


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything needed to train (and later rebuild) one model."""

    task: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: dict[str, Any] = field(default_factory=dict)  # task-specific, see tasks/*.py
    cascade: CascadeConfig | None = None
    name: str = ""
    version: int = CONFIG_VERSION

    def validate(self) -> None:
        from ncaflow.tasks import TASKS

        check(self.task in TASKS, "task", f"unknown task; choose one of {sorted(TASKS)}")
        check(self.version == CONFIG_VERSION, "version", f"this ncaflow reads {CONFIG_VERSION}")
        check_ranges(self)
        self.model.validate()
        self.train.validate()
        if self.cascade is not None:
            self.cascade.validate()


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters: a value is never shown
    whole (a YAML file can hold megabytes in one value)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 25]}... ({len(text)} characters)"


def check(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError ``key '<key>': <message>`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"key '{key}': {message}", key)


# -- ranges -------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """Allowed values of one numeric key: ``lo``..``hi``, each end open or closed."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        def text(x: float) -> str:
            return str(int(x)) if math.isfinite(x) and x == int(x) else f"{x:g}"

        if self.hi == math.inf:
            return f"{'>' if self.lo_open else '>='} {text(self.lo)}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"in {left}{text(self.lo)}, {text(self.hi)}{right}"


AT_LEAST_0 = Range(0)
AT_LEAST_1 = Range(1)
POSITIVE = Range(0, lo_open=True)
FRACTION = Range(0, 1, hi_open=True)  # [0, 1)

MAX_SIDE = 4096  # the largest grid side (data.size, a model file's sizes, export --size)
MAX_STEPS = 100_000  # the longest rollout (train.steps, --steps of animate and export)

# The allowed range of every numeric key of a run config, one line each; `data.*` keys
# are those of the tasks' data sections (a key means the same in every task).  A list's
# range applies to each element; None (where a key allows it) is always allowed.
# tests/test_config.py checks that every numeric field of every config has its line.
RANGES: dict[str, Range] = {
    "model.input_channels": Range(0, 64),
    "model.output_channels": Range(0, 1024),
    "model.hidden_channels": Range(0, 1024),
    "model.hidden_width": Range(1, 8192),
    "model.learned_filters": Range(1, 64),
    "model.kernel_size": Range(1, 31),
    "model.fire_rate": Range(0, 1, lo_open=True),  # (0, 1]
    "model.alive_channel": Range(0, 2048),
    "model.alive_threshold": Range(0, 1),  # an alpha value; the C export prints it
    "model.head": Range(0, 100_000),
    "cascade.scales": Range(1, 64),
    "cascade.steps": Range(1, MAX_STEPS),
    "train.iterations": Range(1, 1e9),
    "train.batch_size": Range(1, 65536),
    "train.steps": Range(1, MAX_STEPS),
    "train.lr": Range(0, 10, lo_open=True),
    "train.weight_decay": Range(0, 100),
    "train.betas": FRACTION,
    "train.scheduler.milestones": Range(1, 1e9),
    "train.scheduler.gamma": Range(0, 100, lo_open=True),
    "train.scheduler.warmup": Range(0, 1e9),
    "train.grad_clip": Range(0, 1e9, lo_open=True),
    "train.eval_every": Range(1, 1e9),
    "train.checkpoint_every": Range(1, 1e9),
    "train.log_images_every": Range(1, 1e9),
    "train.early_stopping.patience": Range(0, 1e9),
    "train.early_stopping.min_delta": Range(0, 1e9),
    "train.seed": Range(0, 2**32 - 3),  # numpy seeds are < 2**32; the trainer adds 2
    "train.threads": Range(1, 4096),
    "version": Range(1, 1000),
    "data.fold": Range(0, 1000),
    "data.size": Range(1, MAX_SIDE),
    "data.pad": Range(0, MAX_SIDE),
    "data.pool_size": Range(1, 1_000_000),
    "data.damage": Range(0, 100_000),
    "data.eval_batch": Range(1, 65536),
    "data.persistence_steps": Range(0, MAX_STEPS),
    "data.test_size": Range(1, 1e8),
    "data.val_size": Range(1, 1e8),
    "data.split_seed": Range(0, 2**32 - 1),
    "data.threshold": FRACTION,
    "data.test_fraction": FRACTION,
    "data.val_fraction": FRACTION,
    "data.bce_weight": Range(0, 1e6),
    "data.uncertainty_samples": Range(0, 10_000),
    "data.augment_shift": Range(0, MAX_SIDE),
    "data.eval_rollouts": Range(1, 10_000),
    "data.channels": Range(1, 4),  # own data: grey, grey + alpha, RGB, RGBA
}


def check_ranges(obj: Any, where: str = "") -> None:
    """Check every number of config dataclass ``obj`` (recursively) against RANGES.

    Raises ConfigError ``key 'train.lr': nan is not allowed; give a number > 0``.  A
    float without a RANGES line must still be finite.
    """
    for f in dataclasses.fields(obj):
        key = f"{where}.{f.name}" if where else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, key)
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            allowed = RANGES.get(key, Range())
            if item not in allowed:
                what = "a finite number" if allowed == Range() else f"a number {allowed}"
                raise ConfigError(f"key '{key}': {short(item)} is not allowed; give {what}", key)


T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"key '{where or '<root>'}': expected a mapping, got {short(data)}", where
        )
    hints, fields = _schema(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown key '{key[:80]}'; allowed keys: {sorted(fields)}", key)
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, key)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        key = f"{where}.{missing[0]}" if where else missing[0]
        raise ConfigError(f"missing required key '{key}'", key)
    return cls(**kwargs)


_Schema = tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]
_SCHEMAS: dict[type, _Schema] = {}


def _schema(cls: type) -> _Schema:
    """A config dataclass's field types and fields, resolved once: the workflow builds a
    run config per grid cell, and resolving the type hints was 90 % of that (0.63 against
    0.07 s per 1,000 growing configs)."""
    if cls not in _SCHEMAS:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        _SCHEMAS[cls] = typing.get_type_hints(cls), fields
    return _SCHEMAS[cls]


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(a, value, key)
            except ConfigError as err:
                errors.append(str(err).split(": ", 1)[1])
        raise ConfigError(f"key '{key}': " + "; or ".join(errors), key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"key '{key}': {short(value)} is not one of {list(args)}", key)
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"key '{key}': expected a list, got {short(value)}", key)
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"key '{key}': expected a mapping, got {short(value)}", key)
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"key '{key}': expected true/false, got {short(value)}", key)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"key '{key}': expected an integer, got {short(value)}", key)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"key '{key}': expected a number, got {short(value)}", key)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"key '{key}': expected a string, got {short(value)}", key)
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")  # a bug, not user error


def to_dict(obj: Any) -> Any:
    """Plain JSON-able form of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML/JSON run config, apply ``key.sub=value`` overrides and validate.

    Errors name the file, the dotted key and (when one set it) the override.
    """
    try:
        return build_config(read_yaml(path), overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}", err.key) from None


def build_config(raw: Any, overrides: Sequence[str] = ()) -> RunConfig:
    """A parsed run config (not modified) plus overrides -> a validated RunConfig.

    What ``ncaflow train`` checks before it starts, and what the workflow checks for
    every grid cell before it schedules a job: keys, types, the ranges in RANGES, the
    relations between keys, the task's data section, whether the model fits the task
    and what the task derives itself (a MedMNIST subset's channels and classes).
    """
    from ncaflow.tasks import TASKS, get_task

    if not isinstance(raw, dict):
        raise ConfigError(
            f"expected a mapping (task:, model:, train:, data:), got {type(raw).__name__}"
        )
    raw = copy.deepcopy(raw)
    parsed = [(item, *parse_override(item)) for item in overrides]
    try:
        for item, key, value in parsed:
            _set_key(raw, key, value, item)
        name = raw.get("task")
        if isinstance(name, str) and name in TASKS:
            derive = getattr(get_task(name), "derive_config", None)
            if derive is not None:
                derive(raw)  # fills in (and checks) what the task's data decides
        cfg = from_dict(RunConfig, raw)
        cfg.validate()
        task = get_task(cfg.task)
        check_ranges(task.data_config(cfg.data), "data")
        task(config=cfg, device="cpu")  # checks that the model fits the task (reads no data)
    except ConfigError as err:
        origin = [item for item, key, _ in parsed if _related(key, err.key)]
        if origin and not str(err).startswith("--set"):
            raise ConfigError(f"--set {short(origin[-1])}: {err}", err.key) from None
        raise
    return cfg


def _related(key: str, other: str | None) -> bool:
    """Whether an override of ``key`` set (part of) config key ``other``."""
    if not other:
        return False
    other = re.sub(r"\[\d+\]$", "", other)  # train.steps[1] -> train.steps
    return key == other or other.startswith(key + ".") or key.startswith(other + ".")


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", 0.001)``; the value is read as YAML.

    Raises ConfigError naming the override and the fix.
    """
    key, value = _parse_override(item)
    return key, copy.deepcopy(value)  # a list value must not be shared between configs


@functools.lru_cache(maxsize=4096)
def _parse_override(item: str) -> tuple[str, Any]:
    """Parsed once: the workflow checks every grid cell's config (1,000s of overrides)."""
    if "=" not in item:
        raise ConfigError(f"--set {short(item)}: expected KEY=VALUE, e.g. --set train.lr=1e-3")
    key, text = item.split("=", 1)
    key = key.strip()
    if not _KEY.fullmatch(key):
        raise ConfigError(
            f"--set {short(item)}: {short(key)} is not a dotted key; write e.g. --set train.lr=1e-3"
        )
    try:
        value = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"--set {short(item)}: the value is not valid YAML ({problem}); quote text values, "
            f"e.g. --set {key}='\"...\"'"
        ) from None
    return key, value


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``key.sub=value`` override to a parsed run config (in place)."""
    key, value = parse_override(item)
    _set_key(raw, key, value, item)


def _set_key(raw: dict[str, Any], key: str, value: Any, item: str) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            section = ".".join(parts[: i + 1])
            raise ConfigError(
                f"--set {short(item)}: '{section}' is a value, not a section; "
                f"set '{section}' itself instead",
                section,
            )
    node[parts[-1]] = value


# -- YAML ---------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e4`` and ``1e-3`` as numbers (as YAML 1.2 does;
    YAML 1.1 reads them as text), rejecting a key given twice and aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Refuse aliases (``*name``): ten nested ones expand 800 bytes into gigabytes."""
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                "a YAML alias (*name) is not allowed in a run config; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {short(key)} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML (or JSON) config file; ConfigError names the file, line and fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give a YAML config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; give a YAML config file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a run config; fix the file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}; fix the file there") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; a run config needs at least 'task: <name>'")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys (task:, model:, train:, data:), "
            f"got {type(raw).__name__}"
        )
    return raw
