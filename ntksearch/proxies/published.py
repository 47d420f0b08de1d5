"""Published gradient-based zero-cost proxies: ZiCo, jacob_cov and Fisher, on the candidate's scoring batch.

Each is checked against its authors' public code; the formula, the layers used, the sign as the authors read
it, and every deviation our models force are stated per proxy below. L is the mean softmax cross-entropy of a
batch (PyTorch's ``F.cross_entropy`` default, as in the authors' code); N the scoring batch size.

``zico`` (Li et al., ICLR 2023, "ZiCo: Zero-shot NAS via inverse Coefficient of Variation on Gradients";
SLDGroup/ZiCo ``compute_zico.py``). The batch is split into B = 2 halves (the authors use 2 mini-batches);
g_b = ∂L_b/∂θ is the gradient of half b's loss. For every weight tensor θ_l (the authors': the weights of each
``Conv2d``/``Linear``; ours: every parameter leaf with ≥ 2 axes, which are the conv/dense kernels, recurrent
kernels and the transformer's embeddings, and never biases or norm scales). The halves are the first and the
second ⌊N/2⌋ examples (one example is left out when N is odd)::

    zico = Σ_l log Σ_{w ∈ θ_l, σ_w > 0} mean_b |g_b,w| / σ_w,    σ_w = std_b g_b,w (population std, ddof 0)

a layer whose inner sum is 0 is skipped. Larger is better. Deviation: the model runs in evaluation mode (no
dropout; the authors use ``train()``, which only differs for dropout since our normalisations always use batch
statistics).

``jacob_cov`` (Mellor et al., 2021, as in Abdelfattah et al.'s SamsungLabs/zero-cost-nas ``jacob_cov.py``):
J (N, D) has row n = ∂(Σ_{n', c} f_c(x_{n'}))/∂x_n, the input gradient of the summed logits (one backward pass;
with batch-statistics normalisation it includes the cross-example terms, exactly like the authors' code).
With v the eigenvalues of the N × N correlation matrix of J's rows and k = 1e-5::

    jacob_cov = −Σ_i [log(v_i + k) + 1/(v_i + k)]

Larger is better (maximal when the rows are uncorrelated). A constant row makes the correlation undefined:
nan, as the authors' ``except`` branch. Computed in float64 on the host.

``fisher`` (Turner et al., 2020; Abdelfattah et al., 2021, ``fisher.py``): at every activation point a (N, *P,
C) with g = ∂L/∂a, g_nc = Σ_{positions p} a_npc g_npc and::

    fisher = Σ_points Σ_c ½ mean_n g_nc²

Larger is better. The points are the authors' "output of every Conv2d/Linear": here, the pre-activation entering
each nonlinearity (conv/dense output, after normalisation where there is one, the residual sum in residual
blocks, and the gates of recurrent cells with time as the positions), plus the logits (the head's output),
differentiated through zero taps (:class:`ntksearch.models.base.Taps`). Deviations: (1) after normalisation
rather than before it, since the model records the nonlinearity's input; (2) each channel counts once, as in
Turner et al.'s Σ_c Δ_c: the authors' code broadcasts a channel's value to the channel's fan-in weights before
summing (a factor fan-in per layer), which our activation points (normalised sums, recurrent gates) have no
single weight tensor to define. Needs ``probe_fn``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from threadpoolctl import threadpool_limits

from ntksearch.models.base import Taps
from ntksearch.ntk.operator import ApplyFn, Array, Params
from ntksearch.proxies.registry import Proxy, ProxyInputs, ProxyValue, register_group

__all__ = ["JACOB_COV_K", "ZICO_SPLITS", "fisher_channel_sum", "jacob_cov_score", "zico_score"]

ZICO_SPLITS = 2
JACOB_COV_K = 1e-5


def _mean_cross_entropy(logits: Array, y: Array) -> Array:
    return optax.softmax_cross_entropy(logits, y).mean()


def zico_score(gradients: list[Array]) -> Array:
    """ZiCo from per-batch gradients: ``gradients[l]`` (B, *shape) stacks the B batches' gradients of tensor l."""
    total = jnp.zeros(())
    for g in gradients:
        std = g.std(axis=0)
        ratio = jnp.where(std > 0, jnp.abs(g).mean(axis=0) / jnp.where(std > 0, std, 1.0), 0.0)
        inner = ratio.sum()
        total = total + jnp.where(inner > 0, jnp.log(jnp.where(inner > 0, inner, 1.0)), 0.0)
    return total


@partial(jax.jit, static_argnums=(0, 4))
def _zico(apply_fn: ApplyFn, params: Params, x: Array, y: Array, splits: int) -> Array:
    size = x.shape[0] // splits
    xs = x[: splits * size].reshape(splits, size, *x.shape[1:])
    ys = y[: splits * size].reshape(splits, size, *y.shape[1:])
    loss = lambda p, xb, yb: _mean_cross_entropy(apply_fn(p, xb), yb)
    # a scan compiles the backward pass once (a vmap or an unrolled loop compiles a larger program)
    _, stacked = jax.lax.scan(lambda carry, batch: (carry, jax.grad(loss)(params, *batch)), None, (xs, ys))
    return zico_score([g for g in jax.tree_util.tree_leaves(stacked) if g.ndim >= 3])


def zico_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del done
    return {"zico": ProxyValue(float(_zico(inputs.apply_fn, inputs.params, inputs.x, inputs.y, ZICO_SPLITS)))}


@partial(jax.jit, static_argnums=0)
def _input_jacobian(apply_fn: ApplyFn, params: Params, x: Array) -> Array:
    grad = jax.grad(lambda xb: jnp.sum(apply_fn(params, xb)))(x)
    return grad.reshape(x.shape[0], -1)


def jacob_cov_score(jacobian: np.ndarray, k: float = JACOB_COV_K) -> float:
    """−Σ [log(v + k) + 1/(v + k)] over the eigenvalues v of the row correlation of ``jacobian`` (N, D)."""
    rows = np.asarray(jacobian, np.float64)
    centred = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    if not np.all(norms > 0) or not np.all(np.isfinite(rows)):
        return float("nan")
    unit = centred / norms[:, None]
    v = np.linalg.eigvalsh(unit @ unit.T)
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def jacob_cov_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del done
    jacobian = np.asarray(_input_jacobian(inputs.apply_fn, inputs.params, inputs.x))
    with threadpool_limits(1, user_api="blas"):  # small host matrices; threaded BLAS beside XLA only thrashes
        return {"jacob_cov": ProxyValue(jacob_cov_score(jacobian))}


def fisher_channel_sum(activation: Array, gradient: Array) -> Array:
    """Σ_c ½ mean_n (Σ_p a_npc g_npc)² for one activation point (N, *positions, C)."""
    n, c = activation.shape[0], activation.shape[-1]
    per_channel = (activation * gradient).reshape(n, -1, c).sum(axis=1)
    return 0.5 * jnp.sum(jnp.mean(per_channel**2, axis=0))


@partial(jax.jit, static_argnums=0)
def _fisher(probe_fn, params: Params, x: Array, y: Array) -> Array:
    shapes = jax.eval_shape(probe_fn, params, x)
    zeros = ([jnp.zeros(s.shape, s.dtype) for s in shapes.features],
             jnp.zeros(shapes.logits.shape, shapes.logits.dtype))

    def loss(taps: tuple[list[Array], Array]) -> tuple[Array, tuple[list[Array], Array]]:
        probe = probe_fn(params, x, Taps(features=taps[0]))
        logits = probe.logits + taps[1]
        return _mean_cross_entropy(logits, y), (probe.features, logits)

    (feature_grads, logit_grad), (features, logits) = jax.grad(loss, has_aux=True)(zeros)
    points = [*zip(features, feature_grads, strict=True), (logits, logit_grad)]
    return sum(fisher_channel_sum(a, g) for a, g in points)


def fisher_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del done
    return {"fisher": ProxyValue(float(_fisher(inputs.probe_fn, inputs.params, inputs.x, inputs.y)))}


register_group("zico", zico_group, [
    Proxy("zico", "zico", "Σ_layers log Σ mean|g|/std(g) over 2 half-batch gradients (Li et al. 2023)", +1),
])
register_group("jacob_cov", jacob_cov_group, [
    Proxy("jacob_cov", "jacob_cov", "−Σ log(v+k)+1/(v+k), v: eigenvalues of the input-Jacobian correlation "
          "(Mellor et al. 2021)", +1),
])
register_group("fisher", fisher_group, [
    Proxy("fisher", "fisher", "Σ_channels ½ mean_n (Σ_positions a·∂L/∂a)² (Turner et al. 2020)", +1,
          requires=("probe_fn",)),
])
