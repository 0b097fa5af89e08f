"""daemon.server.devices.GramCache: least-recently-used eviction by bytes, and its hit and miss counts."""

from __future__ import annotations

import torch

from daemon.server.devices import GramCache

KIB = 1024


def grams(kib: int) -> dict[str, torch.Tensor]:
    """Gram targets of ``kib`` KiB in all: two float32 layers."""
    half = kib * KIB // 4 // 2
    return {"relu1_1": torch.zeros(half), "relu2_1": torch.zeros(half)}


def test_bytes_are_counted_per_entry_and_given_back_on_removal():
    cache = GramCache(max_bytes=100 * KIB)
    cache["a"] = grams(10)
    cache["b"] = grams(20)
    assert cache.nbytes == 30 * KIB
    cache["a"] = grams(5)  # replacing an entry counts only the new one
    assert cache.nbytes == 25 * KIB and len(cache) == 2
    del cache["b"]
    assert cache.nbytes == 5 * KIB and list(cache) == ["a"]
    cache.clear()
    assert cache.nbytes == 0 and len(cache) == 0


def test_the_least_recently_used_entries_go_first():
    cache = GramCache(max_bytes=30 * KIB)
    for key in ("a", "b", "c"):
        cache[key] = grams(10)
    assert cache["a"]  # a is now the most recently used; b the least
    cache["d"] = grams(10)
    assert list(cache) == ["c", "a", "d"]
    assert cache.nbytes == 30 * KIB
    cache["e"] = grams(20)  # needs two entries' room: c and a go
    assert list(cache) == ["d", "e"] and cache.nbytes == 30 * KIB


def test_an_entry_larger_than_the_budget_is_kept_alone():
    cache = GramCache(max_bytes=10 * KIB)
    cache["small"] = grams(4)
    cache["huge"] = grams(40)  # the job that made it still needs it
    assert list(cache) == ["huge"] and cache.nbytes == 40 * KIB


def test_membership_tests_count_hits_and_misses():
    cache = GramCache(max_bytes=100 * KIB)
    cache["a"] = grams(1)
    assert "a" in cache and "a" in cache and "b" not in cache
    assert (cache.hits, cache.misses) == (2, 1)
    cache["a"]  # reading counts nothing: the engine tests membership first
    assert (cache.hits, cache.misses) == (2, 1)
