"""The largest stable gradient-descent learning rate predicted from the NTK's top eigenvalue.

Setting. N examples, C outputs each, f ∈ R^{N·C} the stacked logits, J = ∂f/∂θ and the empirical NTK
K = J Jᵀ ∈ R^{NC×NC} with top eigenvalue λ_max (what :func:`ntksearch.ntk.spectra.lambda_max` estimates for
``apply_fn`` on the batch). The loss is a mean over examples, L(θ) = (1/N) Σᵢ ℓ(fᵢ(θ), yᵢ).

For the linearised model f(θ) = f₀ + J (θ − θ₀) the Hessian of L in parameter space is
∇²L = Jᵀ H J with H = ∇²_f L = (1/N) blockdiag(H₁, …, H_N), Hᵢ the Hessian of ℓ in the logits of example
i. Gradient descent θ ← θ − η ∇L on a quadratic with top curvature s is stable iff η < 2/s, and
s = λ_max(Jᵀ H J) ≤ ‖H‖·λ_max(JᵀJ) = (h_max / N)·λ_max(K), with h_max = maxᵢ ‖Hᵢ‖. Hence

    η < 2N / (h_max · λ_max(K)).

* MSE, L = (1/(2N)) ‖f − y‖²: Hᵢ = I, h_max = 1, so H = (1/N) I, the bound is tight and GD is stable iff
  η < 2N/λ_max (the residual evolves as r ← (I − (η/N) K) r).
* Softmax cross-entropy: Hᵢ = diag(pᵢ) − pᵢpᵢᵀ with pᵢ = softmax(fᵢ). Its eigenvalues lie in [0, 1/2] for
  any p (so h_max = 1/2 is valid everywhere: the conservative bound η < 4N/λ_max). At initialisation with
  uniform p = 1/C, Hᵢ = (1/C)(I − 𝟙𝟙ᵀ/C) has eigenvalues 1/C (on the logit directions orthogonal to 𝟙) and 0,
  giving η < 2NC/λ_max: the edge of stability at init (sufficient; tight unless K's top eigenvector lies
  along the per-example 𝟙 directions, which Hᵢ annihilates). Cross-entropy flattens as training proceeds,
  so exceeding it gives an early loss spike (catapult) rather than guaranteed divergence.

The bound is for plain (full-batch) gradient descent; heavy-ball momentum β raises it by (1 + β), and it
does not apply to adaptive optimizers (Adam's preconditioning changes the curvature seen by the step): a
``learning_rate: auto`` derived from it is valid for :data:`AUTO_LR_OPTIMIZERS` only.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["AUTO_LR_OPTIMIZERS", "stable_learning_rate"]

AUTO_LR_OPTIMIZERS = ("sgd", "momentum")  # gradient descent, plain or heavy-ball: the bound below holds


def stable_learning_rate(lambda_max: float, *, n: int,
                         loss: Literal["cross_entropy", "mse"] = "cross_entropy",
                         n_classes: int | None = None) -> float:
    """Largest stable GD learning rate ``2N / (h_max · λ_max)`` (see the module docstring for the math).

    Args:
      lambda_max: top eigenvalue of the NTK K = J Jᵀ over the N·C outputs of a batch of N examples.
      n: N, the number of examples the loss averages over.
      loss: ``"mse"`` (h_max = 1, exact bound) or ``"cross_entropy"`` (softmax Hessian).
      n_classes: for cross-entropy, C: use h_max = 1/C, exact at uniform initial predictions; ``None`` uses
        the conservative h_max = 1/2, valid for any predictions. Ignored for MSE.
    """
    if not lambda_max > 0:
        raise ValueError(f"lambda_max must be positive, got {lambda_max!r}")
    if n < 1:
        raise ValueError(f"n must be a positive number of examples, got {n!r}")
    if loss == "mse":
        h_max = 1.0
    elif loss == "cross_entropy":
        if n_classes is not None and n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes!r}")
        h_max = 0.5 if n_classes is None else 1.0 / n_classes
    else:
        raise ValueError(f"unknown loss {loss!r}; choose one of: cross_entropy, mse")
    return 2.0 * n / (h_max * float(lambda_max))
