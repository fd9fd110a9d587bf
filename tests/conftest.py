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


_T2I_SHARED = ["--config.log_every=1", "--config.checkpoint_every=2", "--config.optim.warmup_steps=1",
               "--config.eval.num_steps=(2,)", "--config.eval.sweep_steps=2",
               "--config.eval.per_category=2", "--config.eval.batch_size=16", "--config.clip.steps=2",
               "--config.probe.steps=2", "--config.probe.widths=(4,)", "--config.probe.feature_dim=8"]
_T2I_UNET = ["--config.model.channels=8", "--config.model.channel_mult=(1,2)",
             "--config.model.attention_resolutions=(8,)", "--config.model.num_heads=2",
             "--config.model.num_groups=4"]
_T2I_TEXT = ["--config.model.text_width=8", "--config.model.text_depth=1", "--config.model.text_heads=2"]
# Tiny settings of the text-to-image launchers (their smoke tests and the colab smoke test).
T2I_TINY = {
    "glide": [*_T2I_SHARED, *_T2I_UNET, *_T2I_TEXT, "--config.total_steps=2", "--config.batch_size=8",
              "--config.eval.guidance_scales=(0.0,3.0)"],
    "imagen": [*_T2I_SHARED, *_T2I_UNET, "--config.model.num_res_blocks=(1,1)", "--config.total_steps=2",
               "--config.batch_size=8", "--config.eval.guidance_scales=(1.0,20.0)",
               "--config.sr.total_steps=2", "--config.sr.batch_size=8", "--config.sr.warmup_steps=1",
               "--config.sr.model.channels=8", "--config.sr.model.channel_mult=(1,2)",
               "--config.sr.model.num_res_blocks=(1,1)", "--config.sr.model.attention_resolutions=(8,)",
               "--config.sr.model.num_heads=2", "--config.sr.model.num_groups=4",
               "--config.eval.sr_steps=2", "--config.eval.num_sr_test=6"],
    "dalle2": [*_T2I_SHARED, *_T2I_UNET, *_T2I_TEXT, "--config.total_steps=2", "--config.batch_size=8",
               "--config.eval.guidance_scales=(3.0,)", "--config.prior.total_steps=2",
               "--config.prior.batch_size=8", "--config.prior.warmup_steps=1", "--config.prior.width=16",
               "--config.prior.depth=1", "--config.prior.num_heads=2", "--config.prior.num_steps=2",
               "--config.eval.num_variations=2"],
}
