"""Baseline zero-cost proxies from the literature, computed on the same scoring batch as the NTK proxies.

* ``n_params`` — parameter count; ``flops`` — counted forward FLOPs of one example
  (:func:`ntksearch.models.count_flops` when the family did not count them).
* ``grad_norm`` — Σ_l ‖∂L/∂θ_l‖₂ over parameter tensors l, L the mean softmax cross-entropy of the batch
  (Abdelfattah et al., ICLR 2021).
* ``snip`` — Σ |θ ⊙ ∂L/∂θ| (Lee et al., 2019, summed over all weights as in Abdelfattah et al.).
* ``synflow`` — log Σ θ ⊙ ∂R/∂θ at θ ← |θ|, R = Σ f(𝟙; |θ|) the summed output on an all-ones input
  (Tanaka et al., 2020), in float64; reported as a natural log because the raw value overflows for deep
  nets. Normalisation layers are left as they are.
* ``naswot`` — log|det K_H| with K_H[i, j] = number of units on which examples i and j share the sign of the
  pre-activation, codes taken at every nonlinearity (Mellor et al., ICML 2021); needs ``features_fn``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntksearch.models.flops import count_flops
from ntksearch.ntk.operator import ApplyFn, Array, Params
from ntksearch.proxies.registry import Proxy, ProxyInputs, ProxyValue, register_group

__all__: list[str] = []


def size_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del done
    n_params = inputs.n_params if inputs.n_params is not None else sum(
        int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(inputs.params))
    flops = inputs.flops if inputs.flops is not None else count_flops(inputs.apply_fn, inputs.params, inputs.x[:1])
    return {"n_params": ProxyValue(float(n_params)), "flops": ProxyValue(float(flops))}


@partial(jax.jit, static_argnums=0)
def _loss_gradient_scores(apply_fn: ApplyFn, params: Params, x: Array, y: Array) -> tuple[Array, Array]:
    loss = lambda p: optax.softmax_cross_entropy(apply_fn(p, x), y).mean()
    grads = jax.grad(loss)(params)
    leaves = zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(params), strict=True)
    pairs = list(leaves)
    grad_norm = sum(jnp.linalg.norm(g.ravel()) for g, _ in pairs)
    snip = sum(jnp.sum(jnp.abs(g * p)) for g, p in pairs)
    return grad_norm, snip


def gradient_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del done
    grad_norm, snip = _loss_gradient_scores(inputs.apply_fn, inputs.params, inputs.x, inputs.y)
    return {"grad_norm": ProxyValue(float(grad_norm)), "snip": ProxyValue(float(snip))}


@partial(jax.jit, static_argnums=0)
def _synflow(apply_fn: ApplyFn, params: Params, ones: Array) -> Array:
    abs_params = jax.tree_util.tree_map(jnp.abs, params)
    grads = jax.grad(lambda p: jnp.sum(apply_fn(p, ones)))(abs_params)
    return sum(jnp.sum(g * p) for g, p in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(abs_params),
                                               strict=True))


def synflow_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del done
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), inputs.params)
        score = float(_synflow(inputs.apply_fn, params, jnp.ones((1, *inputs.x.shape[1:]), jnp.float64)))
    return {"synflow": ProxyValue(float(np.log(score)) if score > 0 else -np.inf)}


@partial(jax.jit, static_argnums=0)
def _naswot(features_fn, params: Params, x: Array) -> Array:
    feats = features_fn(params, x)
    codes = jnp.concatenate([(f.reshape(f.shape[0], -1) > 0).astype(jnp.float32) for f in feats], axis=1)
    hamming_agree = codes @ codes.T + (1.0 - codes) @ (1.0 - codes).T
    return jnp.linalg.slogdet(hamming_agree.astype(jnp.float32))[1]


def naswot_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del done
    if not jax.eval_shape(inputs.features_fn, inputs.params, inputs.x):
        return {"naswot": ProxyValue(float("nan"))}  # no nonlinearity: no activation pattern
    return {"naswot": ProxyValue(float(_naswot(inputs.features_fn, inputs.params, inputs.x)))}


register_group("size", size_group, [
    Proxy("n_params", "size", "number of parameters", +1),
    Proxy("flops", "size", "counted forward FLOPs of one example", +1),
])
register_group("gradient", gradient_group, [
    Proxy("grad_norm", "gradient", "Σ per-tensor ‖∂L/∂θ‖ of the cross-entropy (Abdelfattah et al. 2021)", +1),
    Proxy("snip", "gradient", "Σ|θ ⊙ ∂L/∂θ| (SNIP saliency, Lee et al. 2019)", +1),
])
register_group("synflow", synflow_group, [
    Proxy("synflow", "synflow", "log synaptic flow Σ θ⊙∂R/∂θ at |θ| (Tanaka et al. 2020)", +1),
])
register_group("naswot", naswot_group, [
    Proxy("naswot", "naswot", "log|det| of the activation-pattern kernel (Mellor et al. 2021)", +1,
          requires=("features_fn",)),
])
