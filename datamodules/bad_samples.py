"""The bad-sample policy: what happens when a wav or image of a manifest cannot be used.

- `on_bad_sample="error"`: BadSampleError naming the file, the reason and the manifest item; from a DataLoader
  worker, PyTorch re-raises it in the main process with that message.
- `on_bad_sample="skip"`: the dataset returns a `SkippedSample` marker, the collate drops it and lists it under the
  batch key `skipped`; `PlacesAudioDataLoader` (main process, so it sees every worker's records) removes that key
  and reports it through a `SkipLog`: one `SkippedSamplesWarning` per epoch with the count and the first files.
  A batch whose samples were all bad is not dropped but replaced by stand-ins: the next good pairs of the
  manifest after it (as many as the batch had). The number of batches per epoch thus stays `len(loader)`, which
  Lightning's validation schedule, per-step LR schedules and DDP (every rank must step together) rely on; the
  price is that a few pairs appear twice in that epoch (the retrieval metric de-duplicates by `index`).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import DataLoader

from .errors import BadSampleError, SkippedSamplesWarning

ON_BAD_SAMPLE = ("error", "skip")


@dataclass(frozen=True)
class SkippedSample:
    """What the dataset returns instead of an item whose wav or image is bad, in skip mode."""

    index: int
    path: str
    reason: str


class SkipLog:
    """Main-process tally of one split's skipped samples, reported once per epoch.

    Records are labelled when they arrive with `when()` ("epoch 3"; "epoch 3, rank 1" under DDP, where each rank
    reports its own) or, outside a Trainer, the pass number over the loader. A label's report is issued when a
    pass over the loader ends, when records or a pass of another label arrive (Lightning may stop iterating
    once it has `len(loader)` batches, before the pass "ends"), and at `flush()` (DataModule teardown).
    """

    def __init__(self, split: str, max_names: int = 5, when: Callable[[], str | None] | None = None):
        self.split = split
        self.max_names = max_names
        self.when = when
        self.count = 0
        self.first: list[tuple[int, str, str]] = []
        self.label: str | None = None
        self.total = 0  # over the whole run
        self.passes = 0
        self.reports: list[str] = []

    def _now(self) -> str:
        label = self.when() if self.when is not None else None
        return label if label is not None else f"pass {self.passes}"

    def start_pass(self) -> None:
        self.passes += 1
        if self.count and self.label != self._now():
            self.flush()

    def add(self, records: list[tuple[int, str, str]]) -> None:
        now = self._now()
        if self.count and self.label != now:
            self.flush()
        if not self.count:
            self.label = now
        self.count += len(records)
        self.total += len(records)
        self.first.extend(records[: self.max_names - len(self.first)])

    def flush(self) -> str | None:
        """Warn about the pending skipped samples (if any) and reset; returns the message."""
        if not self.count:
            return None
        shown = "; ".join(f"{path} ({reason})" for _, path, reason in self.first)
        more = f"; ... and {self.count - len(self.first)} more" if self.count > len(self.first) else ""
        message = f"{self.split} {self.label}: skipped {self.count} bad sample(s): {shown}{more}"
        self.count, self.first = 0, []
        self.reports.append(message)
        warnings.warn(message, SkippedSamplesWarning, stacklevel=2)
        return message


class _SkipFirst:
    """The batches of a batch sampler after its first `skip` (their indices only: nothing is loaded)."""

    def __init__(self, batches, skip: int):
        self.batches, self.skip = batches, skip

    def __iter__(self):
        return itertools.islice(iter(self.batches), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.batches) - self.skip, 0)


class PlacesAudioDataLoader(DataLoader):
    """A DataLoader that takes the skip records off each batch, reports them, and replaces all-bad batches.

    Same arguments as DataLoader plus `skip_log` and `epoch`; Lightning can re-create it with another sampler
    (DDP, predict). `__iter__` runs in the main process, so it sees the records of every worker.

    It is resumable (Lightning saves `state_dict()` in every checkpoint): after a checkpoint written inside an
    epoch (`--last_checkpoint.every_n_train_steps`), the resumed pass over that epoch skips the batches already
    trained on (their indices, without loading them) and yields the rest, in the same order when the order depends
    on the epoch only (the length-bucket sampler; shuffling after the CLI's `StepSeed`). `epoch` is a function returning
    the current training epoch (the DataModule passes the trainer's), so that a checkpoint from the end of an
    epoch does not shorten the next one.
    """

    def __init__(self, *args, skip_log: SkipLog | None = None, epoch: Callable[[], int | None] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_log = skip_log
        self.epoch = epoch
        self._yielded = 0  # batches handed out in the current pass
        self._pass_epoch: int | None = None
        self._resume: tuple[int | None, int] | None = None  # (epoch, batches already trained) from a checkpoint
        self._skipping = 0

    @property
    def _index_sampler(self):
        sampler = super()._index_sampler
        return _SkipFirst(sampler, self._skipping) if self._skipping else sampler

    def state_dict(self) -> dict:
        return {"epoch": self._pass_epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        self._resume = (state.get("epoch"), int(state.get("batches", 0)))

    def _start_pass(self):
        """The underlying iterator for this pass, with the batches of a resumed epoch left out."""
        epoch = self.epoch() if self.epoch is not None else None
        skip = 0
        if self._resume is not None:
            saved_epoch, batches = self._resume
            self._resume = None
            if saved_epoch == epoch and 0 < batches < len(self):
                skip = batches
        self._pass_epoch, self._yielded = epoch, skip
        self._skipping = skip
        try:
            return super().__iter__()
        finally:
            self._skipping = 0

    def _stand_in(self, skipped: list[tuple[int, str, str]]) -> dict:
        """A batch of the next good pairs after the first index of an all-bad batch (as many as it had)."""
        n, want = len(self.dataset), len(skipped)
        items = []
        for step in range(1, n):  # in the main process; only when a whole batch was bad
            item = self.dataset[(skipped[0][0] + step) % n]
            if not isinstance(item, SkippedSample):
                items.append(item)
                if len(items) == want:
                    break
        if not items:
            raise BadSampleError(f"every pair of the data set is bad (e.g. {skipped[0][1]}: {skipped[0][2]})",
                                 path=skipped[0][1], reason=skipped[0][2])
        batch = self.collate_fn(items)
        batch.pop("skipped", None)
        return batch

    def __iter__(self):
        log = self.skip_log
        if log is not None:
            log.start_pass()
        iterator = self._start_pass()
        try:
            for batch in iterator:
                skipped = batch.pop("skipped", None)
                if skipped and log is not None:
                    log.add(skipped)
                if batch["audio"].shape[0] == 0:
                    batch = self._stand_in(skipped)
                self._yielded += 1
                yield batch
        except GeneratorExit:  # the consumer stopped early (Lightning knows the length): report later
            raise
        except Exception:
            # Stop the workers now: left to the garbage collector (the exception's traceback makes a reference
            # cycle), their shutdown can stall for PyTorch's 5 s join timeout. Same call Lightning uses.
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
                self._iterator = None
            if log is not None:
                log.flush()
            raise
        else:
            if log is not None:
                log.flush()
