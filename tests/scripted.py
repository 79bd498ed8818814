"""A scripted policy for tests: any ``(obs, generator) -> actions`` function as a memoryless
sampler policy (it cannot be snapshotted: the function is not data)."""

from adaptrl.sampling import MemorylessPolicy


class Scripted(MemorylessPolicy):
    def __init__(self, fn):
        self.fn = fn

    def act(self, obs, generator=None):
        return self.fn(obs, generator)
