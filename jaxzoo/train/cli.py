"""A launcher's entry point and the one error path every launcher shares.

    if __name__ == "__main__":
        cli.run(lambda args: train_and_evaluate(args.config, args.workdir))

`run` parses and validates the command line (`jaxzoo.train.config`), exposes the CPU cores as
devices, joins a multi-host run if the environment says so, then calls the launcher. A mistake
the user can fix (`jaxzoo.errors.UserError`: config, data, workdir, checkpoint mismatch,
non-finite loss) prints one line, `error: <what is wrong and what is allowed>`, and exits with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Callable, Iterable, Optional, Sequence

from jaxzoo.errors import UserError
from jaxzoo.train.config import LauncherArgs, parse_launcher_args


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """jaxzoo's own warnings (e.g. a damaged checkpoint) as one line without a source excerpt."""
    if category.__module__.startswith("jaxzoo."):
        return f"warning: {' '.join(str(message).split())}\n"
    return _default_format(message, category, filename, lineno, line)


_default_format = warnings.formatwarning


def fail(error: BaseException) -> None:
    """Prints `error` as one line on stderr and exits with status 2."""
    message = " ".join(str(error).split())  # one line, whatever the message holds
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def run(main: Callable[[LauncherArgs], object], argv: Optional[Sequence[str]] = None,
        flags: Iterable[str] = ()):
    """Parses `argv` (default `sys.argv`; `flags` are the launcher's extra `--name[=value]`),
    then returns `main(args)`. A UserError anywhere ends the process through `fail`."""
    argv = sys.argv if argv is None else argv
    warnings.formatwarning = _one_line_warning
    try:
        args = parse_launcher_args(argv[1:], flags)
        use_cpu_cores_as_devices(args.config.batch_size)
        from jaxzoo.train import mesh  # late: JAX starts after XLA_FLAGS is set

        mesh.initialize_distributed()
        return main(args)
    except UserError as e:
        fail(e)


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
