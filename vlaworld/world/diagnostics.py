"""Prophet cosine per horizon, measured in the rollout itself (opt-in diagnostics).

The research team judged the Prophet by the cosine between its predicted change and the real one,
per horizon k (K=1: 0.44 … K=8: 0.79 on cached training latents). Here the targets are the latents
actually observed later in the same rollout: the prediction made at a chunk boundary t (its change
pred_k − z_t) is compared, for k = 1..K, with the observed change z_{t+k} − z_t once the episode
reaches step t+k. Both z_t and z_{t+k} are the per-step latents of the observed clips (one extra V-JEPA
clip per env step, which is why it only runs when diagnostics are switched on), so the observed change
never mixes two encoder calls. Horizons the episode did not reach are not scored, nor are pairs whose
prediction or latent is not finite (the policy drops such a memory; the record counts it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass(frozen=True, kw_only=True)
class _Prediction:
    step: int
    base: torch.Tensor  # [B, D] observed latent z_t at the prediction's step
    delta: torch.Tensor  # [B, K, D] predicted change pred_k - z_t


@dataclass
class HorizonCosine:
    """Accumulates cos(predicted change, observed change) per horizon k = 1..K over a batch of episodes.

    Call ``observed(t, z_t)`` for every env step t in order, and ``predicted(t, delta)`` after the
    ``observed`` call of a chunk boundary t.
    """

    horizon: int
    _pending: list[_Prediction] = field(default_factory=list)
    _last: tuple[int, torch.Tensor] | None = None
    _sums: list[float] = field(init=False)
    _counts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pending = []
        self._last = None
        self._sums = [0.0] * self.horizon
        self._counts = [0] * self.horizon

    def predicted(self, step: int, delta: torch.Tensor) -> None:
        """The predicted change [B, K, D] made at ``step``, whose observed latent must already be known."""
        if self._last is None or self._last[0] != step:
            seen = None if self._last is None else self._last[0]
            raise ValueError(f"prediction at step {step} before that step's latent was observed (last: {seen})")
        if delta.shape[1] != self.horizon:
            raise ValueError(f"expected {self.horizon} horizons, got a prediction of shape {tuple(delta.shape)}")
        self._pending.append(_Prediction(step=step, base=self._last[1], delta=delta.float()))

    def observed(self, step: int, z: torch.Tensor) -> None:
        """The latent [B, D] the rollout produced at ``step``: scores every prediction it is a target of."""
        z = z.float()
        keep = []
        for p in self._pending:
            k = step - p.step
            if 1 <= k <= self.horizon:
                cos = F.cosine_similarity(p.delta[:, k - 1], z - p.base, dim=-1)  # (B,)
                cos = cos[torch.isfinite(cos)]  # a non-finite prediction or latent scores nothing
                self._sums[k - 1] += float(cos.sum())
                self._counts[k - 1] += cos.numel()
            if k < self.horizon:
                keep.append(p)
        self._pending = keep
        self._last = (step, z)

    def summary(self) -> list[float | None]:
        """Mean cosine for k = 1..K (None where no target was reached yet)."""
        return [s / c if c else None for s, c in zip(self._sums, self._counts)]

    def counts(self) -> list[int]:
        """Scored (prediction, row) pairs per horizon k = 1..K."""
        return list(self._counts)

    def overall(self) -> float | None:
        """Mean over every scored (prediction, row, k) pair, as the plugin's world_cos averages over (B, K)."""
        n = sum(self._counts)
        return sum(self._sums) / n if n else None
