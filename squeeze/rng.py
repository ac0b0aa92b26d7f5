"""Per-sample random generators for reproducible augmentation (the dataset contract of squeeze/train.py).

Datasets draw every random choice of a sample from `sample_rng(seed, epoch, index)`; it lives here, apart from
the trainer, so that datasets (library code) need not import the trainer and torch's training machinery.
"""

from __future__ import annotations

import numpy as np


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator a dataset uses to augment sample `index` in `epoch`.

    It depends on (seed, epoch, index) only, so the same sample gets the same augmentation in any process, in any
    DataLoader worker, in any order, and after a resume; different epochs give different augmentations.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))
