"""The compiled product kernel every estimator step runs: a block of probe rows → images, adjoint images, their
row norms and cosines (:class:`ProbeProducts`), by AD passes (:func:`probe_products`) or, for models whose
passes cost more than a dense Jacobian product, through J itself (:func:`dense_probe_products`, J from
:mod:`ntksearch.ntk.jacobian`). :class:`ProbeKernel` binds one of them to a model, point, side and block size.

Both compute the same products of the same probes: M z = Jᵀz (``"state"`` side) or J z (``"param"`` side) and
A z = Mᵀ(M z); they differ only in float rounding (the dense path sums over the batch inside one matrix
product instead of inside the backward pass).
"""

from __future__ import annotations

from functools import partial
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ntksearch.ntk.compile import compiles_fast, jitted
from ntksearch.ntk.forward import ForwardPass, trace_forward
from ntksearch.ntk.jacobian import dense_jacobian, dense_jacobian_pays
from ntksearch.ntk.operator import ApplyFn, Array, Params, Side, linearize

__all__ = [
    "KernelSetup",
    "NonFiniteModelError",
    "ProbeKernel",
    "ProbeProducts",
    "dense_point",
    "dense_probe_products",
    "gram_norms",
    "prepare_kernel",
    "probe_products",
]

class NonFiniteModelError(ValueError):
    """The model's output (or its kernel) at the given point is not finite."""



class ProbeProducts(NamedTuple):
    """What :func:`probe_products` returns for a block of b probe rows (on device).

    Squared norms and inner products of the images reach ‖K u‖² ~ (entries of K)², beyond float32's range
    (≈ 3.4e38) for a kernel whose entries are still representable; so the kernel returns only scale-free
    pieces, norms and cosines, and the squares are formed on the host in float64 (the properties).

    Attributes:
      images: (b, D) M zᵢ. adjoint: (b, d) A zᵢ = Mᵀ(M zᵢ), or (b, 0) when not asked for.
      image_norm, adjoint_norm: (b,) row norms, computed without overflow. cosines: (b, b) cosines between
        the rows of ``images`` (0 for a zero row).
      n_nonfinite: non-finite entries of the model output.
      outputs: (n,) the flattened model output at the point (the linearisation's primal value).
    """

    images: Array
    adjoint: Array
    image_norm: Array
    adjoint_norm: Array
    cosines: Array
    n_nonfinite: Array
    outputs: Array

    @property
    def image_sq(self) -> np.ndarray:
        """(b,) ‖M zᵢ‖² in float64 (host)."""
        return np.asarray(self.image_norm, np.float64) ** 2

    @property
    def adjoint_sq(self) -> np.ndarray:
        """(b,) ‖A zᵢ‖² in float64 (host)."""
        return np.asarray(self.adjoint_norm, np.float64) ** 2

    @property
    def gram(self) -> np.ndarray:
        """(b, b) images · imagesᵀ in float64 (host)."""
        norms = np.asarray(self.image_norm, np.float64)
        return np.asarray(self.cosines, np.float64) * np.outer(norms, norms)


def _row_norms(rows: Array) -> Array:
    """(b, k) → (b,) Euclidean row norms, each row scaled by its largest entry before squaring."""
    if rows.shape[1] == 0:
        return jnp.zeros(rows.shape[0], rows.dtype)
    top = jnp.max(jnp.abs(rows), axis=1)
    safe = jnp.where(top > 0, top, 1.0)[:, None]
    return top * jnp.sqrt(jnp.sum((rows / safe) ** 2, axis=1))


def _cosines(rows: Array, norms: Array) -> Array:
    """(b, b) cosines between the rows (a zero row gives zeros)."""
    unit = rows / jnp.where(norms > 0, norms, 1.0)[:, None]
    return unit @ unit.T


def _pad_rows(rows: Array, multiple: int) -> Array:
    """Zero rows appended so the row count is a multiple of ``multiple``."""
    pad = -rows.shape[0] % multiple
    return jnp.concatenate([rows, jnp.zeros((pad, *rows.shape[1:]), rows.dtype)]) if pad else rows


def _on_devices(fn, rows: Array, mesh: Mesh | None) -> Array:
    """fn on a (b, ...) block of probe rows split over the mesh's devices (padded with zero rows, which every
    product maps to zero, then dropped), or simply fn(rows) without a mesh."""
    if mesh is None:
        return fn(rows)
    padded = jax.lax.with_sharding_constraint(_pad_rows(rows, mesh.size), NamedSharding(mesh, PartitionSpec("probes")))
    return fn(padded)[: rows.shape[0]]


def _probe_products(apply_fn: ApplyFn, params: Params, x: Array, z: Array, *, side: Side, adjoint: bool,
                    mesh: Mesh | None = None) -> ProbeProducts:
    """All Jacobian products one estimator step needs, for a block of probe rows z (b, d).

    One forward pass (linearisation), b passes of the side's mode, and b of the other mode when ``adjoint``;
    plus the small reductions the estimators read (row norms, the b×b Gram matrix). Pure and jit-compiled;
    keyed on ``apply_fn``, side, adjoint, mesh and shapes.
    """
    lin = linearize(apply_fn, params, x)
    z = z.astype(lin.z.dtype)
    img = _on_devices(lambda w: lin.images(side, w), z, mesh)
    adj = (_on_devices(lambda w: lin.adjoint_images(side, w), img, mesh) if adjoint
           else jnp.zeros((z.shape[0], 0), z.dtype))
    return _products(img, adj, lin.z)


def _dense_probe_products(jac: Array, outputs: Array, z: Array, *, side: Side, adjoint: bool) -> ProbeProducts:
    """:func:`probe_products` through a dense Jacobian ``jac`` (n, p) at the point whose output is ``outputs``
    (n,): images z J (``"state"``) or z Jᵀ (``"param"``), adjoint images by the transposed product; 2·b·n·p
    flops each. Pure and jit-compiled; keyed on side, adjoint and shapes."""
    z = z.astype(jac.dtype)
    img = z @ jac if side == "state" else z @ jac.T
    adj = (img @ jac.T if side == "state" else img @ jac) if adjoint else jnp.zeros((z.shape[0], 0), z.dtype)
    return _products(img, adj, outputs)


def _gram_norms(jac: Array, *, side: Side, square: bool) -> Array:
    """(2,) ‖J‖_F and, when ``square``, ‖A‖_F for the Gram matrix on ``side`` (A = J Jᵀ on ``"state"``, JᵀJ on
    ``"param"``; else 0): the exact tr A = ‖J‖²_F and tr A² = ‖A‖²_F, squared on the host (scale-free here)."""
    if not square:
        return jnp.stack([_frobenius(jac), jnp.zeros((), jac.dtype)])
    return jnp.stack([_frobenius(jac), _gram_frobenius(jac if side == "state" else jac.T)])


_PROBE_STATIC = ("apply_fn", "side", "adjoint", "mesh")
_DENSE_STATIC = ("side", "adjoint")
_GRAM_STATIC = ("side", "square")
probe_products = jitted(_probe_products, fast=False, static_argnames=_PROBE_STATIC)
dense_probe_products = jitted(_dense_probe_products, fast=False, static_argnames=_DENSE_STATIC)
gram_norms = jitted(_gram_norms, fast=False, static_argnames=_GRAM_STATIC)


def _frobenius(m: Array) -> Array:
    return _row_norms(_row_norms(m)[None])[0]


def _gram_frobenius(rows: Array) -> Array:
    """‖R Rᵀ‖_F from its upper block triangle (3/4 of the flops): with R = [R₁; R₂],
    ‖R Rᵀ‖²_F = ‖R₁R₁ᵀ‖²_F + 2‖R₁R₂ᵀ‖²_F + ‖R₂R₂ᵀ‖²_F."""
    half = rows.shape[0] // 2
    if half == 0:
        return _frobenius(rows @ rows.T)
    top, bottom = rows[:half], rows[half:]
    parts = jnp.stack([_frobenius(top @ top.T), _frobenius(top @ bottom.T), _frobenius(bottom @ bottom.T)])
    scale = jnp.max(parts)
    unit = parts / jnp.where(scale > 0, scale, 1.0)
    return scale * jnp.sqrt(unit[0] ** 2 + 2.0 * unit[1] ** 2 + unit[2] ** 2)


def _products(img: Array, adj: Array, outputs: Array) -> ProbeProducts:
    """Images and adjoint images with the reductions the estimators read (row norms, the b×b cosines)."""
    img_norm = _row_norms(img)
    return ProbeProducts(img, adj, img_norm, _row_norms(adj), _cosines(img, img_norm),
                         jnp.sum(~jnp.isfinite(outputs)), outputs)


def dense_point(apply_fn: ApplyFn, params: Params, x: Array, mesh: Mesh | None, *, forward: ForwardPass | None = None,
                fast_compile: bool = False) -> tuple[Array, Array] | None:
    """(outputs, J) when dense products pay (:func:`ntksearch.ntk.jacobian.dense_jacobian_pays`, one device),
    the forward pass computes no batch statistics (``ForwardPass.batch_statistics``: nothing is compiled for such
    a model) and the model's examples pass :func:`ntksearch.ntk.jacobian.dense_jacobian`'s check; else None.
    ``forward``: the model's traced forward pass at ``(params, x)``, when the caller has it (else traced here)."""
    if mesh is not None:
        return None
    forward = forward if forward is not None else trace_forward(apply_fn, params, x)
    if forward.batch_statistics or not dense_jacobian_pays(forward, params, x):
        return None
    return dense_jacobian(apply_fn, params, x, fast_compile=fast_compile)


class KernelSetup(NamedTuple):
    """How a model's product kernel is built: ``point`` (outputs, J) for products through the dense per-example
    Jacobian or None for AD passes (:func:`dense_point`), and ``fast_compile`` (XLA level 0,
    :func:`ntksearch.ntk.compile.compiles_fast`)."""

    point: tuple[Array, Array] | None
    fast_compile: bool


def prepare_kernel(apply_fn: ApplyFn, params: Params, x: Array, mesh: Mesh | None, compile_mode: str, *,
                   forward: ForwardPass | None = None) -> KernelSetup:
    """Both choices made before a model's product kernel compiles, from one abstract trace of its forward pass
    (:func:`ntksearch.ntk.forward.trace_forward`; ``forward``, when the caller has it): the compile level for
    ``compile_mode``, then the dense point (compiled at that level)."""
    forward = forward if forward is not None else trace_forward(apply_fn, params, x)
    fast = compiles_fast(compile_mode, forward)
    return KernelSetup(dense_point(apply_fn, params, x, mesh, forward=forward, fast_compile=fast), fast)


class ProbeKernel:
    """The product kernel bound to one model, point, side and block size b; rows are zero-padded to b, so every
    call of one kernel (the estimators' blocks, their fixed part, :func:`ntksearch.ntk.spectra.lambda_max`)
    reuses one compiled program. Checks the model output on first use.

    ``point``: (outputs, J) from :func:`dense_point` for products through the dense per-example Jacobian
    (:func:`dense_probe_products`), None for AD passes (:func:`probe_products`), ``"auto"`` (default) to
    decide by :func:`dense_point`. ``self.dense`` tells which path the kernel took. ``fast_compile``: compile
    at XLA's level 0 (:mod:`ntksearch.ntk.compile`).
    """

    def __init__(self, apply_fn: ApplyFn, params: Params, x: Array, *, side: Side, block_size: int, dim: int,
                 mesh: Mesh | None, point: tuple[Array, Array] | Literal["auto"] | None = "auto",
                 fast_compile: bool = False):
        if isinstance(point, str):
            point = dense_point(apply_fn, params, x, mesh, fast_compile=fast_compile)
        if point is None:
            self.call = partial(jitted(_probe_products, fast=fast_compile, static_argnames=_PROBE_STATIC),
                                apply_fn, params, x, side=side, mesh=mesh)
        else:
            outputs, jac = point
            self.call = partial(jitted(_dense_probe_products, fast=fast_compile, static_argnames=_DENSE_STATIC),
                                jac, outputs, side=side)
            self.gram_norms = partial(jitted(_gram_norms, fast=fast_compile, static_argnames=_GRAM_STATIC),
                                      jac, side=side)
        self.dense = point is not None  # the per-example check passed, so the output is finite
        self.b, self.dim, self.checked = block_size, dim, False
        self.dtype = np.dtype(jax.tree_util.tree_leaves(params)[0].dtype)

    def __call__(self, rows: np.ndarray | Array, *, adjoint: bool) -> ProbeProducts:
        """Products for up to b host rows (zero-padded to b: one compiled shape), or for a whole (b, d) block
        already on the device (used as it is, without a round trip through the host)."""
        if isinstance(rows, jax.Array) and rows.shape == (self.b, self.dim):
            padded = rows
        else:
            padded = np.zeros((self.b, self.dim), self.dtype)
            padded[: rows.shape[0]] = rows
        out = self.call(jnp.asarray(padded), adjoint=adjoint)
        if not self.checked:
            self.checked = True
            if int(out.n_nonfinite):
                raise NonFiniteModelError(
                    f"apply_fn(params, x) returned {int(out.n_nonfinite)} non-finite values; the NTK is undefined there"
                )
        return out

    def gram_sums(self, square: bool) -> np.ndarray:
        """Dense kernels only: (tr A, tr A² or 0) exactly, in float64 (see :func:`gram_norms`)."""
        return np.asarray(self.gram_norms(square=square), np.float64) ** 2

    def rows(self, rows: np.ndarray, *, adjoint: bool, keep: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """``image_sq`` and ``adjoint_sq`` (k,) of k rows, processed in chunks of b, plus the fields named in
        ``keep`` (``images`` (k, D), ``adjoint`` (k, d)) copied to the host."""
        outs = [self(rows[i : i + self.b], adjoint=adjoint) for i in range(0, rows.shape[0], self.b)]
        names = ("image_sq", "adjoint_sq", *keep)
        return {name: np.concatenate([np.asarray(getattr(o, name)) for o in outs])[: rows.shape[0]] for name in names}

