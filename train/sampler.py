"""P x K identity sampler for the triplet loss (APNET.md section 2: K = 4, batch 80 -> P = 20 IDs)."""

from __future__ import annotations

from typing import Hashable, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class RandomIdentitySampler(Sampler[int]):
    """Yields dataset indices in consecutive batches of ``batch_size = P x K``: P distinct identities, K images each.

    Per epoch (as in reid-strong-baseline): each identity's images are shuffled and cut into chunks of K
    (an identity with fewer than K images is sampled with replacement up to K; a last partial chunk is
    dropped); batches draw P identities at random among those with chunks left and take one chunk of each.
    Unlike the reference, the epoch length is fixed: ``len(self) = num_batches * batch_size`` with
    ``num_batches = (total chunks) // P``, independent of seed and epoch (so DDP ranks with different seeds
    run the same number of steps); when fewer than P identities still have chunks, the batch is topped up
    with fresh chunks of other random identities. The order depends only on ``seed`` and ``set_epoch(epoch)``.
    Use it with ``DataLoader(batch_size=batch_size, sampler=..., drop_last=True)``.
    """

    def __init__(self, pids: Sequence[Hashable], batch_size: int, num_instances: int, seed: int = 0) -> None:
        if num_instances < 1:
            raise ValueError(f"num_instances (K) must be >= 1, found {num_instances}")
        if batch_size < num_instances or batch_size % num_instances:
            raise ValueError(f"batch_size={batch_size} must be a positive multiple of num_instances={num_instances} "
                             f"(batch = P identities x K images); e.g. use batch_size="
                             f"{max(1, round(batch_size / num_instances)) * num_instances}")
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.num_pids_per_batch = self.batch_size // self.num_instances
        self.seed = int(seed)
        self.epoch = 0
        groups: dict[Hashable, list[int]] = {}
        for i, pid in enumerate(pids):
            groups.setdefault(pid, []).append(i)
        self._groups = [np.asarray(v, dtype=np.int64) for v in groups.values()]
        if len(self._groups) < self.num_pids_per_batch:
            raise ValueError(
                f"only {len(self._groups)} identities for P = batch_size // num_instances = {self.num_pids_per_batch}"
                f" per batch; lower batch_size to at most {len(self._groups) * self.num_instances} or raise "
                f"num_instances")
        k = self.num_instances
        total_chunks = sum(max(len(g), k) // k for g in self._groups)
        self.num_batches = total_chunks // self.num_pids_per_batch
        self._cache: tuple[int, list[int]] | None = None

    @property
    def num_pids(self) -> int:
        """Number of distinct identities."""
        return len(self._groups)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (deterministic) order the next ``__iter__`` yields."""
        self.epoch = int(epoch)

    def _chunks(self, rng: np.random.Generator, g: np.ndarray) -> list[np.ndarray]:
        k = self.num_instances
        idx = rng.choice(g, size=k, replace=True) if len(g) < k else rng.permutation(g)
        return [idx[j:j + k] for j in range(0, len(idx) - k + 1, k)]

    def _epoch_indices(self) -> list[int]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = [self._chunks(rng, g) for g in self._groups]
        avail = [p for p, c in enumerate(chunks) if c]
        p_batch = self.num_pids_per_batch
        out: list[int] = []
        for _ in range(self.num_batches):
            if len(avail) >= p_batch:
                chosen = [avail[j] for j in rng.choice(len(avail), size=p_batch, replace=False)]
                extra: list[int] = []
            else:  # top up with other identities, each with a fresh chunk
                chosen = list(avail)
                others = np.setdiff1d(np.arange(self.num_pids), chosen)
                extra = [int(p) for p in rng.choice(others, size=p_batch - len(chosen), replace=False)]
            for p in chosen:
                out.extend(int(i) for i in chunks[p].pop(0))
                if not chunks[p]:
                    avail.remove(p)
            for p in extra:
                out.extend(int(i) for i in self._chunks(rng, self._groups[p])[0])
        self._cache = (self.epoch, out)
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self._epoch_indices())

    def __len__(self) -> int:
        return self.num_batches * self.batch_size
