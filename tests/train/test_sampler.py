"""P x K identity sampler: batch structure, determinism, fixed length, validation."""

from __future__ import annotations

from collections import Counter

import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from train.sampler import RandomIdentitySampler  # noqa: E402


def make_pids(seed: int = 0, n_ids: int = 30) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 12, (n_ids,), generator=g).tolist()  # some ids have fewer than K images
    pids = [pid for pid, c in enumerate(counts) for _ in range(c)]
    perm = torch.randperm(len(pids), generator=g).tolist()
    return [pids[i] * 10 + 5 for i in perm]  # arbitrary, non-contiguous labels


def batches(sampler, size):
    idx = list(sampler)
    return [idx[i:i + size] for i in range(0, len(idx), size)]


def test_batches_are_p_ids_times_k():
    pids = make_pids()
    s = RandomIdentitySampler(pids, batch_size=16, num_instances=4, seed=1)
    idx = list(s)
    assert len(idx) == len(s) > 0 and len(idx) % 16 == 0
    for b in batches(s, 16):
        counts = Counter(pids[i] for i in b)
        assert len(counts) == 4 and set(counts.values()) == {4}
    used = set(idx)
    assert len(used) > 0.6 * len(pids)  # most images are seen in an epoch


def test_ids_with_few_images_are_sampled_with_replacement():
    pids = [0, 1, 1, 2, 2, 2, 2, 2, 3]
    s = RandomIdentitySampler(pids, batch_size=8, num_instances=4, seed=0)
    for b in batches(s, 8):
        for pid in {pids[i] for i in b}:
            chunk = [i for i in b if pids[i] == pid]
            assert len(chunk) == 4 and all(pids[i] == pid for i in chunk)
    assert 0 in set(list(s))  # the single image of id 0 is repeated K times when id 0 is drawn


def test_deterministic_per_seed_and_epoch_fixed_length():
    pids = make_pids(3)
    a = RandomIdentitySampler(pids, 16, 4, seed=5)
    b = RandomIdentitySampler(pids, 16, 4, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    a.set_epoch(0)
    assert list(a) == first
    lengths = set()
    for seed in range(4):
        s = RandomIdentitySampler(pids, 16, 4, seed=seed)
        for epoch in range(3):
            s.set_epoch(epoch)
            assert len(list(s)) == len(s)
            lengths.add(len(s))
    assert len(lengths) == 1  # same step count on every DDP rank / epoch


def test_dataloader_batches_line_up():
    pids = make_pids(2)
    s = RandomIdentitySampler(pids, 12, 3, seed=0)
    ds = TensorDataset(torch.arange(len(pids)), torch.tensor(pids))
    loader = DataLoader(ds, batch_size=12, sampler=s, drop_last=True)
    n = 0
    for _, y in loader:
        assert sorted(Counter(y.tolist()).values()) == [3, 3, 3, 3]
        n += 1
    assert n == len(loader) == len(s) // 12


def test_validation_messages():
    pids = make_pids()
    with pytest.raises(ValueError, match="multiple of num_instances=4"):
        RandomIdentitySampler(pids, batch_size=18, num_instances=4)
    with pytest.raises(ValueError, match="only 2 identities"):
        RandomIdentitySampler([0, 0, 1, 1], batch_size=12, num_instances=2)
    with pytest.raises(ValueError):
        RandomIdentitySampler(pids, batch_size=4, num_instances=0)
