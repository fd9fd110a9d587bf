import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxzoo.train import mesh as mesh_lib


def test_batch_size_must_divide_device_count():
    mesh = mesh_lib.make_mesh(np.array(jax.devices() * 1))
    mesh_lib.check_batch_size(4 * mesh.devices.size, mesh)
    fake = jax.sharding.Mesh(np.array(jax.devices() * 3), ("data",))  # 3 "devices"
    with pytest.raises(ValueError, match="batch_size=100 must be a positive multiple of the device count 3"):
        mesh_lib.check_batch_size(100, fake)


def test_fsdp_spec_shards_largest_divisible_dimension():
    assert mesh_lib.fsdp_spec((512, 1024), 8) == P(None, "data")
    assert mesh_lib.fsdp_spec((2**16, 3), 8) == P("data", None)
    assert mesh_lib.fsdp_spec((1023, 1025), 8) == P()  # nothing divisible
    assert mesh_lib.fsdp_spec((8, 8), 8) == P()  # too small to be worth it
    assert mesh_lib.fsdp_spec((512, 1024), 1) == P()


def test_global_batch_round_trip():
    mesh = mesh_lib.make_mesh()
    x = np.arange(12.0 * mesh.devices.size).reshape(-1, 3)
    g = mesh_lib.make_global_batch({"x": x}, mesh)
    assert g["x"].sharding.spec == P("data")
    np.testing.assert_array_equal(mesh_lib.to_host(g)["x"], x)
