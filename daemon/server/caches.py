"""Bounded caches the daemon keeps between jobs: style Gram targets (by memory) and recent results."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, MutableMapping

import torch


class GramCache(MutableMapping[Hashable, dict[str, torch.Tensor]]):
    """LRU map of Gram targets, evicting the least recently used entries beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, dict[str, torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size(grams: dict[str, torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in grams.values())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            found = key in self._entries
            if found:
                self.hits += 1
            else:
                self.misses += 1
            return found

    def __getitem__(self, key: Hashable) -> dict[str, torch.Tensor]:
        with self._lock:
            self._entries.move_to_end(key)
            return self._entries[key]

    def __setitem__(self, key: Hashable, grams: dict[str, torch.Tensor]) -> None:
        with self._lock:
            if key in self._entries:
                self._bytes -= self._size(self._entries.pop(key))
            self._entries[key] = grams
            self._bytes += self._size(grams)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= self._size(evicted)

    def __delitem__(self, key: Hashable) -> None:
        with self._lock:
            self._bytes -= self._size(self._entries.pop(key))

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


class ResultCache:
    """The last few results by job id, on the CPU, for warm starts."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, job_id: str, image: torch.Tensor) -> None:
        with self._lock:
            self._entries[job_id] = image
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, job_id: str) -> torch.Tensor | None:
        with self._lock:
            return self._entries.get(job_id)

    def __len__(self) -> int:
        return len(self._entries)
