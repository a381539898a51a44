"""The progress bar: episodes done (resumed ones included), success so far, errors, ETA (tqdm)."""

from __future__ import annotations

from collections.abc import Iterable

from tqdm import tqdm

from vlaworld.eval.results import EpisodeRecord


class Progress:
    """tqdm over the run's episodes; silent when stderr is not a terminal unless ``enabled`` is True."""

    def __init__(self, total: int, done: Iterable[EpisodeRecord], *, enabled: bool | None = None) -> None:
        done = list(done)
        self.successes = sum(r.success for r in done if r.error is None)
        self.ok = sum(r.error is None for r in done)
        self.errors = len(done) - self.ok
        self._bar = tqdm(total=total, initial=len(done), unit="ep", desc="episodes", dynamic_ncols=True,
                         disable=None if enabled is None else not enabled, smoothing=0.1)
        self._postfix()

    def _postfix(self) -> None:
        rate = f"{100 * self.successes / self.ok:.1f}%" if self.ok else "n/a"
        fields = {"success": f"{self.successes}/{self.ok} ({rate})"}
        if self.errors:
            fields["errors"] = str(self.errors)
        self._bar.set_postfix(fields, refresh=False)

    def update(self, record: EpisodeRecord) -> None:
        if record.error is None:
            self.ok += 1
            self.successes += record.success
        else:
            self.errors += 1
        self._postfix()
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
