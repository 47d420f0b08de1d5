"""Short confirmation training with optax, and the NTK-predicted stable learning rate."""

from ntksearch.train.hparams import OPTIMIZERS, SCHEDULES, TrainHParams
from ntksearch.train.loop import DIVERGENCE_FACTOR, TrainableModel, TrainResult, train_model
from ntksearch.train.stability import AUTO_LR_OPTIMIZERS, stable_learning_rate

__all__ = [
    "AUTO_LR_OPTIMIZERS",
    "DIVERGENCE_FACTOR",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainHParams",
    "TrainResult",
    "TrainableModel",
    "stable_learning_rate",
    "train_model",
]
