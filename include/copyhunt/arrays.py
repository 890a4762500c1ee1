"""Small numpy helpers shared by the fingerprint and proposal code."""

from __future__ import annotations

import numpy as np


def true_indices(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """``np.nonzero(mask)``, the same arrays in the same (C) order, several times faster.

    numpy 2's ``nonzero`` on a 2-D or 3-D mask costs 35-500 us on the working image's sizes (it
    builds every axis' index while scanning); finding the flat positions and splitting them is
    one fast scan plus arithmetic on the few hits (measured: 44 -> 5 us on a 4x58x78 blob mask).
    """
    return np.unravel_index(np.flatnonzero(mask), mask.shape)
