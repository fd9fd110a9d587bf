"""Shared test helpers: running launchers as subprocesses exactly as users do."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def launcher_env(num_devices: int = 1, **extra) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
        PYTHONUNBUFFERED="1",
        # Smoke tests measure plumbing, not speed: skip most XLA optimisation passes.
        JAX_DISABLE_MOST_OPTIMIZATIONS="true",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def run_launcher():
    """`run_launcher(module, config_spec, workdir, *args, num_devices=1, env=None, check=True)`."""

    def run(module, config_spec, workdir, *args, num_devices=1, env=None, check=True, timeout=600):
        cmd = [sys.executable, "-m", module, f"--config={config_spec}", f"--workdir={workdir}", *args]
        proc = subprocess.run(cmd, cwd=REPO, env=launcher_env(num_devices, **(env or {})),
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc

    return run


def read_jsonl(path) -> list[dict]:
    return [json.loads(l) for l in pathlib.Path(path).read_text().splitlines() if l.strip()]
