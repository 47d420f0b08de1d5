"""Datasets (digits, Fashion-MNIST, the adding problem, user files); class-balanced scoring batches."""

from ntksearch.data.adding import load_adding
from ntksearch.data.dataset import Dataset, DatasetError, DatasetNotFoundError
from ntksearch.data.digits import DIGITS_SPLIT, load_digits
from ntksearch.data.fashion_mnist import FASHION_SPLIT, load_fashion_mnist
from ntksearch.data.files import load_file
from ntksearch.data.registry import DATASETS, dataset_options, load_dataset
from ntksearch.data.splits import scoring_batch, stratified_split, subsample

__all__ = [
    "DATASETS",
    "DIGITS_SPLIT",
    "FASHION_SPLIT",
    "Dataset",
    "DatasetError",
    "DatasetNotFoundError",
    "dataset_options",
    "load_adding",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_file",
    "scoring_batch",
    "stratified_split",
    "subsample",
]
