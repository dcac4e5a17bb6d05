"""Named, seeded random streams derived from one seed."""

from __future__ import annotations

import hashlib

import numpy as np


def _key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


class Streams:
    """Independent random generators, one per name, all derived from one ``seed``.

    The generator for a name depends only on the seed and the name, never on which
    other streams exist or the order they were asked for, so adding a stream to a
    model never changes the numbers another stream draws.
    """

    __slots__ = ("_cache", "seed")

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._cache: dict[str, np.random.Generator] = {}

    def get(self, name: str) -> np.random.Generator:
        """The generator named ``name`` (the same object on every call)."""
        gen = self._cache.get(name)
        if gen is None:
            seq = np.random.SeedSequence(entropy=self.seed, spawn_key=(_key(name),))
            gen = self._cache[name] = np.random.Generator(np.random.PCG64(seq))
        return gen

    def fresh(self, name: str) -> np.random.Generator:
        """A new generator for ``name`` restarted from its first draw."""
        seq = np.random.SeedSequence(entropy=self.seed, spawn_key=(_key(name),))
        return np.random.Generator(np.random.PCG64(seq))

    def __getitem__(self, name: str) -> np.random.Generator:
        return self.get(name)


def stream(seed: int, name: str) -> np.random.Generator:
    """A fresh generator for ``name`` under ``seed`` (same numbers as ``Streams(seed).get``)."""
    return Streams(seed).fresh(name)
