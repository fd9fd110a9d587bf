"""Configs: loading a config file's variant, typed overrides and validation.

Every launcher is called as::

    python -m experiments.<paper> --config=experiments/configs/<paper>.py:<variant> \
        --workdir=DIR [--config.key=value ...] [--other_flag=value ...]

`experiments/configs/<paper>.py` defines `get_config(arg)` returning a locked
`ml_collections.ConfigDict`, and may define `CHOICES = {"dotted.key": (allowed, ...)}` for its
enumerated keys. Overrides are parsed to the type of the value they replace (a tuple's elements
to the type of its current elements), a key that does not exist is an error that names it and
lists the valid keys, and the whole config is validated (`validate`) before a launcher does any
work: a typo never trains silently with the default, and a bad value never surfaces as a
traceback an hour in. We parse the command line ourselves rather than through absl flags so that
launchers can be called twice in one process (tests, colabs) without global flag state.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import pathlib
from typing import Any, Iterable, Mapping, Sequence

import ml_collections

from jaxzoo.errors import ConfigError

REQUIRED_KEYS = ("seed", "total_steps", "batch_size", "log_every", "checkpoint_every")


def base_config(variant: str | None, variants: Sequence[str]) -> ml_collections.ConfigDict:
    """The keys every launcher's config starts from, for a validated `variant`.

    `variant` None means the first of `variants`. Sets `variant`, `seed`, `keep_checkpoints`,
    `fsdp` and `ema_decay` (None: no EMA); the paper's config adds the rest.
    """
    variant = variant or variants[0]
    if variant not in variants:
        raise ConfigError(f"unknown variant {variant!r}; choose one of {tuple(variants)}")
    return ml_collections.ConfigDict(dict(variant=variant, seed=0, keep_checkpoints=3, fsdp=False,
                                          ema_decay=None))


def load_config(spec: str, overrides: Mapping[str, str] | None = None) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:arg]` by calling its `get_config(arg)`, applies the dotted
    `key -> text` overrides and validates the result against the file's `CHOICES`.

    Raises ConfigError naming the problem: a missing file, an unknown variant or key, a value
    of the wrong type or outside what is allowed.
    """
    path, _, arg = spec.partition(":")
    file = pathlib.Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_jaxzoo_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config(arg)")
    config = module.get_config(arg or None)
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ConfigError(f"config {spec!r} lacks the required keys {missing}")
    apply_overrides(config, overrides or {})
    validate(config, getattr(module, "CHOICES", {}))
    return config


def get_key(config, key: str):
    """The value of a dotted key, e.g. `get_key(config, "optim.lr")`."""
    node = config
    for name in key.split("."):
        node = node[name]
    return node


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class AtLeast:
    """A CHOICES entry allowing every int >= `low` (e.g. `"eval.batch_size": AtLeast(1)`)."""

    def __init__(self, low: int):
        self.low = low

    def __contains__(self, value) -> bool:
        return _is_int(value) and value >= self.low

    def __str__(self) -> str:
        return f"an int >= {self.low}"


class Decay:
    """A CHOICES entry allowing None or a float in (0, 1) (an EMA decay)."""

    def __contains__(self, value) -> bool:
        return value is None or (isinstance(value, float) and 0.0 < value < 1.0)

    def __str__(self) -> str:
        return "None or a float in (0, 1)"


# The runtime's keys (read by jaxzoo.train.loop), checked in every config that has them.
RUNTIME_CHOICES = {"seed": AtLeast(0), "total_steps": AtLeast(1), "batch_size": AtLeast(1),
                   "log_every": AtLeast(1), "checkpoint_every": AtLeast(1),
                   "keep_checkpoints": AtLeast(1), "ema_decay": Decay()}


def validate(config: ml_collections.ConfigDict, choices: Mapping[str, Any] | None = None) -> None:
    """Raises ConfigError for the first key whose value is not allowed: the runtime keys'
    `RUNTIME_CHOICES`, then `choices` (dotted key -> a tuple of allowed values, or `AtLeast(n)`;
    for a tuple value, each element must be allowed)."""
    present = {k: v for k, v in RUNTIME_CHOICES.items() if k in config}
    for key, allowed in {**present, **(choices or {})}.items():
        value = get_key(config, key)
        bad = [v for v in (value if isinstance(value, tuple) else (value,)) if v not in allowed]
        if bad:
            shown = ", ".join(map(repr, allowed)) if isinstance(allowed, (tuple, list)) else allowed
            raise ConfigError(f"{key}={value!r}; allowed: {shown}")


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """All leaf keys of a ConfigDict in dotted form, sorted."""
    keys = []
    for name, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return sorted(keys)


def _parse_value(text: str, current: Any, key: str) -> Any:
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key}={text!r}: expected a boolean (true/false)")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise ConfigError(
            f"--config.{key}={text!r}: expected {_a(type(current).__name__)} like {current!r}"
        ) from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    if current is not None and not isinstance(value, type(current)):
        raise ConfigError(
            f"--config.{key}={text!r}: expected {_a(type(current).__name__)} like {current!r}"
        )
    if isinstance(current, tuple) and current:
        value = _typed_elements(value, current, key, text)
    return value


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _typed_elements(value: tuple, current: tuple, key: str, text: str) -> tuple:
    """`value`'s elements as the type of `current`'s (ints widen to floats), or a ConfigError."""
    kinds = {type(v) for v in current}
    if len(kinds) != 1:
        return value
    kind = kinds.pop()
    out = []
    for v in value:
        if kind is float and _is_int(v):
            v = float(v)
        if type(v) is not kind:
            raise ConfigError(f"--config.{key}={text!r}: every element must be {_a(kind.__name__)}, "
                              f"like {current!r}; got {v!r}")
        out.append(v)
    return tuple(out)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, str]) -> None:
    """Sets dotted `key -> text` overrides in place, parsing text to the existing type."""
    valid = flat_keys(config)
    for key, text in overrides.items():
        if key not in valid:
            raise ConfigError(
                f"unknown config key {key!r}; valid keys are: {', '.join(valid)}"
            )
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = _parse_value(text, node[leaf], key)


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


@dataclasses.dataclass
class LauncherArgs:
    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    flags: dict[str, str]


def parse_launcher_args(argv: Sequence[str], flags: Iterable[str] = ()) -> LauncherArgs:
    """Parses a launcher command line.

    Args:
      argv: arguments without the program name.
      flags: extra `--name[=value]` flags the launcher accepts (a bare `--name` means "true").

    Returns:
      The config with overrides applied (and locked), the workdir and the extra flags given.
    """
    allowed = set(flags)
    config_spec, workdir, overrides, extra = None, None, {}, {}
    usage = (
        "usage: --config=path/to/config.py:variant --workdir=DIR [--config.key=value ...]"
        + "".join(f" [--{f}]" for f in sorted(allowed))
    )
    for arg in argv:
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; {usage}")
        name, has_value, value = arg[2:].partition("=")
        if name == "config":
            config_spec = value
        elif name == "workdir":
            workdir = value
        elif name.startswith("config."):
            if not has_value:
                raise ConfigError(f"{arg!r} needs a value: --{name}=VALUE")
            overrides[name[len("config."):]] = value
        elif name in allowed:
            extra[name] = value if has_value else "true"
        else:
            raise ConfigError(f"unknown flag --{name}; {usage}")
    if not config_spec or not workdir:
        raise ConfigError(f"--config and --workdir are required; {usage}")
    config = load_config(config_spec, overrides)
    config.lock()
    return LauncherArgs(config=config, workdir=pathlib.Path(workdir), flags=extra)
