"""Devices, the `data` mesh axis, and how arrays are laid out on it.

One mesh axis, `data`, spans every device of every process. The batch is sharded on it;
parameters and optimizer state are replicated by default, or, with `fsdp=True`, each array large
enough to matter is sharded on `data` along its largest divisible dimension (ZeRO-3 style: the
jitted step all-gathers it where it is used). Nothing here compiles anything.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxzoo.errors import ConfigError

DATA_AXIS = "data"

# Environment variables that mean "this process is one of several": JAX's own coordinator
# variables, and the launchers JAX can auto-detect (SLURM, Open MPI).
_COORDINATOR_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize_distributed() -> bool:
    """Calls `jax.distributed.initialize` when the environment says this is a multi-process run.

    Multi-process when `JAX_COORDINATOR_ADDRESS` (with `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`) is
    set, or under SLURM / Open MPI with more than one task. On CPU, collectives go through gloo.
    Must run before anything touches a JAX backend; launchers call it first thing.

    Returns:
      Whether this is a multi-process run.
    """
    env = os.environ
    explicit = "JAX_COORDINATOR_ADDRESS" in env
    auto = int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    if not (explicit or auto):
        return False
    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        missing = [v for v in _COORDINATOR_VARS if v not in env]
        if missing:
            raise ConfigError(
                f"JAX_COORDINATOR_ADDRESS is set but {missing} are not; set all of {_COORDINATOR_VARS}"
            )
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    else:
        jax.distributed.initialize()
    return True


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis `data` over all devices of all processes."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raises before anything compiles if the global batch cannot be split evenly."""
    n = mesh.devices.size
    if batch_size <= 0 or batch_size % n:
        raise ConfigError(
            f"batch_size={batch_size} must be a positive multiple of the device count {n} "
            f"({jax.process_count()} process(es) x {jax.local_device_count()} local devices); "
            f"try {max(n, (batch_size // n) * n)}"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split on `data`, other axes whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def fsdp_spec(shape: tuple[int, ...], num_shards: int, min_size: int = 2**16) -> P:
    """Partition spec that shards the largest dimension divisible by `num_shards`.

    Arrays with fewer than `min_size` elements, or with no divisible dimension, stay replicated:
    sharding them would cost more in communication than it saves in memory.
    """
    if num_shards == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % num_shards == 0:
            spec = [None] * len(shape)
            spec[dim] = DATA_AXIS
            return P(*spec)
    return P()


def state_shardings(abstract_tree, mesh: Mesh, fsdp: bool = False, min_size: int = 2**16):
    """Shardings for a pytree of `ShapeDtypeStruct`s (params, optimizer state, ...).

    One shape-based rule covers params and the optimizer moments that mirror them, so both
    always agree.
    """
    n = mesh.devices.size

    def rule(leaf):
        spec = fsdp_spec(tuple(leaf.shape), n, min_size) if fsdp else P()
        return NamedSharding(mesh, spec)

    return jax.tree.map(rule, abstract_tree)


def make_global_batch(local_batch, mesh: Mesh):
    """Assembles each process's slice of the batch into global arrays sharded on `data`."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def to_host(tree):
    """Fetches a pytree of (possibly multi-process, sharded) arrays as NumPy on every process."""
    from jax.experimental import multihost_utils

    def fetch(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(fetch, tree)
