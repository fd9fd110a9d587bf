"""Configs and the launcher command line.

Every launcher is called as::

    python -m experiments.<paper> --config=experiments/configs/<paper>.py:<variant> \
        --workdir=DIR [--config.key=value ...] [--other_flag=value ...]

`experiments/configs/<paper>.py` defines `get_config(arg)` returning a locked
`ml_collections.ConfigDict`. Overrides are parsed to the type of the value they replace, and a
key that does not exist is an error that names it and lists the valid keys: a typo never trains
silently with the default. We parse the command line ourselves rather than through absl flags so
that launchers can be called twice in one process (tests, colabs) without global flag state.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import pathlib
import sys
from typing import Any, Iterable, Mapping, Sequence

import ml_collections

REQUIRED_KEYS = ("seed", "total_steps", "batch_size", "log_every", "checkpoint_every")


class ConfigError(ValueError):
    """A config file, variant or override is invalid."""


def base_config(variant: str | None, variants: Sequence[str]) -> ml_collections.ConfigDict:
    """The keys every launcher's config starts from, for a validated `variant`.

    `variant` None means the first of `variants`. Sets `variant`, `seed`, `keep_checkpoints`,
    `fsdp` and `ema_decay` (None: no EMA); the paper's config adds the rest.
    """
    variant = variant or variants[0]
    if variant not in variants:
        raise ValueError(f"unknown variant {variant!r}; choose one of {tuple(variants)}")
    return ml_collections.ConfigDict(dict(variant=variant, seed=0, keep_checkpoints=3, fsdp=False,
                                          ema_decay=None))


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:arg]` by calling its `get_config(arg)`."""
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
    return config


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
            f"--config.{key}={text!r}: expected a {type(current).__name__} like {current!r}"
        ) from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    if current is not None and not isinstance(value, type(current)):
        raise ConfigError(
            f"--config.{key}={text!r}: expected a {type(current).__name__} like {current!r}"
        )
    return value


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
    config = load_config(config_spec)
    apply_overrides(config, overrides)
    config.lock()
    return LauncherArgs(config=config, workdir=pathlib.Path(workdir), flags=extra)


def cli(argv: Sequence[str], flags: Iterable[str] = ()) -> LauncherArgs:
    """A launcher's entry: joins a multi-host run if the environment says so, then parses
    `argv[1:]`; a bad command line exits with its message and status 2 (no traceback)."""
    from jaxzoo.train import mesh  # late: configs import this module without touching JAX

    try:
        args = parse_launcher_args(argv[1:], flags)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    use_cpu_cores_as_devices(args.config.batch_size)
    mesh.initialize_distributed()
    return args


def use_cpu_cores_as_devices(batch_size: int) -> None:
    """Exposes each CPU core as a JAX CPU device (up to a divisor of `batch_size`).

    XLA runs one computation on about one core, so on a CPU-only machine a launcher would leave
    the other cores idle; as separate devices on the `data` mesh axis each takes its share of
    the batch. It only sets `XLA_FLAGS` before JAX starts, never overrides a device count the
    user set, and changes nothing where an accelerator is the default backend.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = max(d for d in range(1, cores + 1) if batch_size % d == 0)
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
