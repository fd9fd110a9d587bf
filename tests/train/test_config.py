import pytest

from jaxzoo.train import cli, config as config_lib

VAE = "experiments/configs/vae.py"


def test_variants_load_locked_with_required_keys(monkeypatch):
    monkeypatch.chdir(config_lib.pathlib.Path(__file__).resolve().parents[2])
    for variant in ("cpu", "paper"):
        c = config_lib.load_config(f"{VAE}:{variant}")
        for key in config_lib.REQUIRED_KEYS:
            assert key in c
        with pytest.raises(AttributeError):
            c.not_a_key = 1


def test_unknown_override_names_key_and_lists_valid_ones(monkeypatch):
    monkeypatch.chdir(config_lib.pathlib.Path(__file__).resolve().parents[2])
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.parse_launcher_args([f"--config={VAE}:cpu", "--workdir=/tmp/x", "--config.optim.lrr=1"])
    msg = str(e.value)
    assert "'optim.lrr'" in msg and "optim.lr" in msg and "total_steps" in msg


def test_overrides_are_parsed_to_the_existing_type(monkeypatch):
    monkeypatch.chdir(config_lib.pathlib.Path(__file__).resolve().parents[2])
    args = config_lib.parse_launcher_args([
        f"--config={VAE}:cpu", "--workdir=/tmp/x", "--config.optim.lr=1", "--config.total_steps=7",
        "--config.model.hidden=(3, 4)", "--config.fsdp=true", "--config.data.name=mnist"])
    c = args.config
    assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float)
    assert c.total_steps == 7 and c.model.hidden == (3, 4) and c.fsdp is True
    assert c.data.name == "mnist"
    with pytest.raises(config_lib.ConfigError, match="expected an int"):
        config_lib.parse_launcher_args([f"--config={VAE}:cpu", "--workdir=/x", "--config.total_steps=abc"])
    with pytest.raises(config_lib.ConfigError, match="boolean"):
        config_lib.parse_launcher_args([f"--config={VAE}:cpu", "--workdir=/x", "--config.fsdp=maybe"])


def test_bad_command_lines_say_what_is_wrong(monkeypatch):
    monkeypatch.chdir(config_lib.pathlib.Path(__file__).resolve().parents[2])
    with pytest.raises(config_lib.ConfigError, match="required"):
        config_lib.parse_launcher_args([f"--config={VAE}:cpu"])
    with pytest.raises(config_lib.ConfigError, match="unknown flag --render"):
        config_lib.parse_launcher_args([f"--config={VAE}:cpu", "--workdir=/x", "--render"])
    with pytest.raises(config_lib.ConfigError, match="does not exist"):
        config_lib.parse_launcher_args(["--config=nope.py:cpu", "--workdir=/x"])
    with pytest.raises(ValueError, match="unknown variant 'gpu'"):
        config_lib.load_config(f"{VAE}:gpu")
    args = config_lib.parse_launcher_args([f"--config={VAE}:cpu", "--workdir=/x", "--render"],
                                          flags=("render",))
    assert args.flags == {"render": "true"}


def test_cpu_cores_become_devices_dividing_the_batch(monkeypatch):
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    monkeypatch.setattr(cli.os, "environ", {})  # a private environment: nothing leaks to jax
    cli.use_cpu_cores_as_devices(100)  # 6 cores, 100 = 4 * 25: the largest divisor is 5
    assert cli.os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=5"
    cli.os.environ["XLA_FLAGS"] = "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=1"
    cli.use_cpu_cores_as_devices(512)  # the user's own count wins
    assert cli.os.environ["XLA_FLAGS"].endswith("device_count=1")
