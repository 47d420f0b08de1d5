"""Checks run before the first trial: what an experiment asks of its dataset and of its output folder.

:func:`load_experiment` validates a config on its own (types, names, ranges, NTK budgets that must fit every
candidate). What depends on the data, or on the machine, is checked here, by ``ntksearch validate`` and at the
start of :func:`ntksearch.search.run_search`, so that a run never starts only to crash or to fail every trial:

* ``scoring.batch_size`` ≤ the training split (the scoring batch is drawn from it);
* ``scoring.ntk.max_matvecs`` with ``method: exact``: enough AD passes for min(n, p) ≤ n = batch × classes
  (twice, for tr K², plus two label VJPs): ``2n + 2``;
* ``confirm.max_train``/``confirm.max_val`` ≥ the number of classes (stratified subsamples keep one example of
  every class);
* ``output``: the folder can be created and written.

Every problem is a :class:`~ntksearch.validation.ConfigError` naming the config file and the key path.
"""

from __future__ import annotations

import tempfile

from ntksearch.data import Dataset
from ntksearch.search.config import Experiment
from ntksearch.validation import ConfigError

__all__ = ["check_dataset_fit", "check_output"]

_LABEL_VJPS = 2  # yᵀKy for raw and centred targets


def check_dataset_fit(experiment: Experiment, dataset: Dataset) -> None:
    """The experiment's sizes against ``dataset``; ConfigError at the first key that does not fit."""
    error = lambda key, message: ConfigError(experiment.path, key, message)
    n_train, classes = len(dataset.y_train), dataset.n_classes
    batch = experiment.scoring.batch_size
    if batch > n_train:
        raise error("scoring.batch_size", f"{batch} is larger than the training split of {dataset.name} "
                                          f"({n_train} examples), which the scoring batch is drawn from")
    ntk = experiment.scoring.ntk
    needed = 2 * batch * classes + _LABEL_VJPS
    if ntk.method == "exact" and ntk.max_matvecs < needed:
        raise error("scoring.ntk.max_matvecs",
                    f"{ntk.max_matvecs} AD passes are too few for method exact on a scoring batch of {batch} × "
                    f"{classes} outputs: a candidate with at least n = {batch * classes} parameters needs 2n + 2 = "
                    f"{needed}; raise max_matvecs or use method auto")
    if experiment.confirm is None:
        return
    for key, limit in (("max_train", experiment.confirm.max_train), ("max_val", experiment.confirm.max_val)):
        if limit is not None and limit < classes:
            raise error(f"confirm.{key}", f"{limit} is fewer than the {classes} classes of {dataset.name}: a "
                                          "stratified subsample keeps at least one example of every class")


def check_output(experiment: Experiment, *, create: bool) -> None:
    """The output folder can be written: created (``create``), or, without ``create`` (``ntksearch validate``
    leaves nothing behind), its nearest existing folder; either is probed with a temporary folder."""
    folder = experiment.output
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        probed = folder if create else next(p for p in (folder, *folder.parents) if p.exists())
        tempfile.TemporaryDirectory(dir=probed).cleanup()
    except OSError as exc:
        raise ConfigError(experiment.path, "output", f"cannot write the output folder {folder}: "
                                                     f"{exc.strerror or exc}") from exc
