"""The train / validation / test splits of one image data set (binary, or grey levels)."""
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class Splits:
    """A data set split three ways: binarized, or grey levels (``"mnist5k-grey"``).

    Attributes:
        name: the data set's name, as given to :func:`fastair.data.load_dataset`.
        train: ``[N_train, D]`` float32 CPU tensor of exact 0/1 values (``D = 784``), or of
            grey levels in [0, 1] for a grey data set (:func:`fastair.data.load_mnist5k_grey`).
        valid: ``[N_valid, D]``, likewise (validation data).
        test: ``[N_test, D]``, likewise.
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    @classmethod
    def from_arrays(cls, name, train, valid, test):
        """Build from 0/1 (or bool) numpy arrays ``[N, D]``, or grey levels in [0, 1]; each
        becomes a float32 tensor."""
        return cls(name, *(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                           for a in (train, valid, test)))

    @property
    def x_dim(self):
        """Pixels per image, ``D``."""
        return self.train.shape[1]

    @property
    def sizes(self):
        """``(N_train, N_valid, N_test)``."""
        return (len(self.train), len(self.valid), len(self.test))

    def __repr__(self):
        n_train, n_valid, n_test = self.sizes
        return (f"Splits(name={self.name!r}, train={n_train}, valid={n_valid}, test={n_test}, "
                f"x_dim={self.x_dim})")
