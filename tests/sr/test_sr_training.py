"""The SR family's shared training helpers: schedules, quantisation, generator choice."""

import numpy as np
import pytest

from jaxzoo.sr import training as sr_lib


def test_multistep_schedule_and_quantize():
    s = sr_lib.multistep_schedule(1e-4, (50, 100, 200), 0.5)
    assert [float(s(t)) for t in (0, 49, 50, 99, 100, 250)] == pytest.approx(
        [1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5, 1.25e-5])
    q = sr_lib.quantize(np.array([-0.2, 0.5, 0.5 / 255 + 1e-4, 1.7]))
    np.testing.assert_allclose(q, [0.0, 128 / 255, 1 / 255, 1.0])
