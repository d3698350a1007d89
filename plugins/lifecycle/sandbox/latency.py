"""Provider latency: how long a provider takes to answer, as a distribution with a tail.

Real providers answer over the internet in roughly 100-300 ms; a lognormal distribution around a
median with a long right tail is how such round trips look. The sandbox waits a sample of it
before answering each provider request (never a control request), without holding a thread.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

DEFAULT_SIGMA = 0.4  # p99 at about 2.5 times the median


@dataclass(frozen=True)
class Latency:
    """Lognormal request latency: ``median_ms`` milliseconds at the median; ``sigma`` (the log's
    standard deviation) sets the tail (p99 = median x e^(2.326 sigma)). A median of 0 is none."""

    median_ms: float = 0.0
    sigma: float = DEFAULT_SIGMA

    def __post_init__(self) -> None:
        if self.median_ms < 0 or self.sigma < 0:
            raise ValueError("latency median and sigma must not be negative")

    def sample(self, rng: random.Random | None = None) -> float:
        """One request's latency, in seconds."""
        if not self.median_ms:
            return 0.0
        draw = (rng or random).lognormvariate(math.log(self.median_ms / 1000), self.sigma)
        return float(draw)

    def quantile(self, q: float) -> float:
        """The latency (seconds) a share ``q`` of requests stay under (0 < q < 1)."""
        from statistics import NormalDist

        if not self.median_ms:
            return 0.0
        return self.median_ms / 1000 * math.exp(self.sigma * NormalDist().inv_cdf(q))

    def describe(self) -> str:
        """``median 150 ms, p99 380 ms (lognormal)``, or ``none``."""
        if not self.median_ms:
            return "none"
        return f"median {self.median_ms:.0f} ms, p99 {self.quantile(0.99) * 1000:.0f} ms (lognormal)"
