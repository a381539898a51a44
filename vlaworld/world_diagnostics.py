"""Prophet cosine per horizon, measured in the rollout itself (opt-in diagnostics).

The research team judged the Prophet by the cosine between its predicted change and the real one,
per horizon k (K=1: 0.44 … K=8: 0.79 on cached training latents). Here the targets are the latents
actually observed later in the same rollout: the prediction made at a chunk boundary t is compared,
for k = 1..K, with z_{t+k} − z_t as the episode reaches step t+k. This needs a latent at every env
step (one extra V-JEPA clip per step), which is why it only runs when diagnostics are switched on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class _Prediction:
    step: int
    z_t: torch.Tensor  # [B, D]
    delta: torch.Tensor  # [B, K, D] predicted z_{t+k} - z_t


@dataclass
class HorizonCosine:
    """Accumulates cos(predicted change, observed change) per horizon over an episode batch."""

    horizon: int
    _pending: list[_Prediction] = field(default_factory=list)
    _sums: list[float] = field(init=False)
    _counts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pending = []
        self._sums = [0.0] * self.horizon
        self._counts = [0] * self.horizon

    def predicted(self, step: int, z_t: torch.Tensor, memory_pred: torch.Tensor) -> None:
        """A ``pred`` memory [B, K, D] made at ``step`` from the current latent z_t [B, D]."""
        self._pending.append(_Prediction(step, z_t.float(), memory_pred.float() - z_t.float()[:, None]))

    def observed(self, step: int, z: torch.Tensor) -> None:
        """The latent [B, D] the rollout produced at ``step``: scores every prediction it is a target of."""
        keep = []
        for p in self._pending:
            k = step - p.step
            if 1 <= k <= self.horizon:
                cos = F.cosine_similarity(p.delta[:, k - 1], z.float() - p.z_t, dim=-1)  # (B,)
                self._sums[k - 1] += float(cos.sum())
                self._counts[k - 1] += cos.numel()
            if step - p.step < self.horizon:
                keep.append(p)
        self._pending = keep

    def summary(self) -> list[float | None]:
        """Mean cosine for k = 1..K (None where no target was reached yet)."""
        return [s / c if c else None for s, c in zip(self._sums, self._counts)]
