"""NeRF (Mildenhall et al. 2020, arXiv 2003.08934): nerf_pl's MLP, coarse-to-fine ray rendering.

`NeRFMLP` is nerf_pl's network exactly (github.com/kwea123/nerf_pl, `models/nerf.py`, `class NeRF`): D=8 ReLU layers of width W on
the encoded position with the input concatenated again before layer index 4, a linear sigma head,
a linear `xyz_encoding_final`, a direction branch (W + 27 -> W/2, ReLU) and a sigmoid RGB head;
595,844 parameters with the defaults. Layer names follow nerf_pl so imported weights map 1:1.
It takes raw points and unit directions and applies the frequency encoding (NeRF Eq. 4) itself.

`NeRF` holds a coarse and a fine MLP and renders rays nerf_pl's way (NeRF Sec. 5.2): 64
stratified coarse samples, 128 samples drawn from the coarse weights by `sample_pdf`, and the
fine network evaluated on all 192 sorted samples. Shapes: rays_o, rays_d [..., 3]; near, far
[...] or scalars. Randomness comes in through `key`; `key=None` is the deterministic eval path.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxzoo.nerf import render


class NeRFMLP(nn.Module):
    """nerf_pl's NeRF MLP: (points [..., 3], unit dirs [..., 3]) -> (rgb [..., 3], sigma [...])."""

    depth: int = 8
    width: int = 256
    skips: Sequence[int] = (4,)
    xyz_freqs: int = 10
    dir_freqs: int = 4

    @nn.compact
    def __call__(self, xyz, dirs):
        x_enc = render.frequency_encoding(xyz, self.xyz_freqs)  # [..., 63] by default
        d_enc = render.frequency_encoding(dirs, self.dir_freqs)  # [..., 27]
        h = x_enc
        for i in range(self.depth):
            if i in self.skips:
                h = jnp.concatenate([x_enc, h], axis=-1)  # seed: cat([input, h]) before layer i
            h = nn.relu(nn.Dense(self.width, name=f"xyz_encoding_{i + 1}")(h))
        sigma = nn.Dense(1, name="sigma")(h)[..., 0]  # linear; the renderer applies the ReLU
        feat = nn.Dense(self.width, name="xyz_encoding_final")(h)
        d_enc = jnp.broadcast_to(d_enc, feat.shape[:-1] + d_enc.shape[-1:])
        h = nn.relu(nn.Dense(self.width // 2, name="dir_encoding")(jnp.concatenate([feat, d_enc], -1)))
        rgb = nn.sigmoid(nn.Dense(3, name="rgb")(h))
        return rgb, sigma


class NeRF(nn.Module):
    """Coarse and fine NeRF MLPs with hierarchical volume rendering.

    Attributes:
      depth, width, skips, xyz_freqs, dir_freqs: of both MLPs.
      num_coarse: stratified samples per ray (64 in the paper).
      num_fine: extra samples from the coarse weights (128); 0 renders the coarse pass only.
      lindisp: sample linearly in inverse depth (used with NDC-free forward-facing scenes).
      noise_std: std of the noise added to sigma during training (the official code's
        raw_noise_std regulariser, as in nerf_pl).
      white_background: composite onto white (Blender scenes).
    """

    depth: int = 8
    width: int = 256
    skips: Sequence[int] = (4,)
    xyz_freqs: int = 10
    dir_freqs: int = 4
    num_coarse: int = 64
    num_fine: int = 128
    lindisp: bool = False
    noise_std: float = 0.0
    white_background: bool = True

    def setup(self):
        mlp = dict(depth=self.depth, width=self.width, skips=tuple(self.skips),
                   xyz_freqs=self.xyz_freqs, dir_freqs=self.dir_freqs)
        self.coarse = NeRFMLP(**mlp)
        self.fine = NeRFMLP(**mlp) if self.num_fine > 0 else None

    def _render(self, mlp, rays_o, rays_d, z_vals, key):
        points = rays_o[..., None, :] + rays_d[..., None, :] * z_vals[..., :, None]  # [..., S, 3]
        rgb, sigma = mlp(points, rays_d[..., None, :])
        noise = self.noise_std if key is not None else 0.0
        return render.volume_render(sigma, rgb, z_vals, rays_d, noise_std=noise, key=key,
                                    white_background=self.white_background)

    def __call__(self, rays_o, rays_d, near, far, key: Optional[jax.Array] = None):
        """Renders rays; returns {"coarse": RenderResult, "fine": RenderResult (if num_fine)}.

        With a key: perturbed stratified samples, random `sample_pdf` draws and sigma noise
        (training). With key=None: deterministic samples and no noise (evaluation).
        """
        train = key is not None
        keys = jax.random.split(key, 4) if train else [None] * 4
        near = jnp.broadcast_to(jnp.asarray(near, rays_o.dtype), rays_o.shape[:-1])
        far = jnp.broadcast_to(jnp.asarray(far, rays_o.dtype), rays_o.shape[:-1])
        z_coarse = render.sample_along_rays(keys[0], near, far, self.num_coarse, perturb=train,
                                            lindisp=self.lindisp)
        out = {"coarse": self._render(self.coarse, rays_o, rays_d, z_coarse, keys[1])}
        if self.fine is None:
            return out
        # Seed: bins are the midpoints of the coarse samples, weights drop the two end samples,
        # and no gradient flows into the coarse pass through the sample positions.
        z_mid = 0.5 * (z_coarse[..., 1:] + z_coarse[..., :-1])
        weights = jax.lax.stop_gradient(out["coarse"].weights[..., 1:-1])
        z_fine = render.sample_pdf(keys[2], z_mid, weights, self.num_fine, deterministic=not train)
        z_all = jnp.sort(jnp.concatenate([z_coarse, jax.lax.stop_gradient(z_fine)], -1), axis=-1)
        out["fine"] = self._render(self.fine, rays_o, rays_d, z_all, keys[3])
        return out


def final(out: dict) -> render.RenderResult:
    """The pass whose colour is the model's answer: fine if present, else coarse."""
    return out.get("fine", out["coarse"])


def render_image(model: NeRF, params, rays_o, rays_d, near, far, chunk: int = 4096):
    """Deterministic rendering of any number of rays, `chunk` rays at a time.

    The chunk size is independent of the training batch, so evaluation memory is bounded by
    `chunk` whatever the image size. rays_o, rays_d: [..., 3]; near, far: scalars or [...].
    Returns the final pass's RenderResult with the leading shape [...] (weights dropped).
    Jit this function (with `model` and `chunk` static) to compile it once per image shape.
    """
    batch_shape = rays_o.shape[:-1]
    n = math.prod(batch_shape)
    flat = lambda a: jnp.broadcast_to(jnp.asarray(a, rays_o.dtype), batch_shape).reshape(n)
    rays = (rays_o.reshape(n, 3), rays_d.reshape(n, 3), flat(near), flat(far))
    num_chunks = -(-n // chunk)
    pad = num_chunks * chunk - n
    rays = [jnp.concatenate([r, jnp.repeat(r[-1:], pad, axis=0)]) if pad else r for r in rays]
    rays = [r.reshape(num_chunks, chunk, *r.shape[1:]) for r in rays]

    def one(chunk_rays):
        r = final(model.apply(params, *chunk_rays))
        return r.rgb, r.depth, r.acc

    rgb, depth, acc = jax.lax.map(one, tuple(rays))
    unflat = lambda a: a.reshape(num_chunks * chunk, *a.shape[2:])[:n].reshape(*batch_shape, *a.shape[2:])
    return render.RenderResult(rgb=unflat(rgb), depth=unflat(depth), acc=unflat(acc), weights=None)
