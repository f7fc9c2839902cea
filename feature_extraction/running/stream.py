"""The run: one loader across this process's slides, features streamed to each slide's file.

:func:`run_slides` starts the planning thread (:class:`~feature_extraction.running.schedule.Lookahead`
over :func:`~feature_extraction.running.planning.plan_slide`) and one DataLoader whose worker processes
live across slides (:class:`~feature_extraction.reading.loader.SlideReader`). On the main thread a
:class:`SlideStream` admits each plan, hands its tiles to the loader as :class:`Work` items,
runs the encoder on each batch while the next one loads, and writes the features into
:class:`~mil_crcrs.data.store.FeatureWriter`, which makes ``DIR/<slide>.h5`` appear atomically.
A slide that fails is recorded (:mod:`feature_extraction.running.failures`) and the run goes on.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch

from feature_extraction.encoding.runner import EncoderRunner
from feature_extraction.reading.direct_batch import decode_blocks
from feature_extraction.reading.loader import IDLE, SlideReader, Work
from feature_extraction.reading.slides import READ_ERROR, SlideError
from feature_extraction.running import failures
from feature_extraction.running.planning import RunContext, SlidePlan, plan_slide
from feature_extraction.running.result import ExtractResult
from feature_extraction.running.schedule import DONE, Lookahead
from feature_extraction.running.settings import ExtractSettings
from mil_crcrs.data.store import FeatureWriter
from mil_crcrs.errors import first_line
from mil_crcrs.runlog import Eta, bars_wanted, progress_log

#: Notes (a slide read with OpenSlide and why, a slide that failed); progress lines go to
#: :data:`mil_crcrs.runlog.PROGRESS_LOGGER`. The CLI shows both and keeps them in ``run.log``.
log = logging.getLogger("mil_crcrs.extract")


class SlideStream:
    """The main thread's side of a run: admits plans, hands out work, writes features."""

    def __init__(
        self,
        out_dir: Path,
        runner: EncoderRunner,
        settings: ExtractSettings,
        result: ExtractResult,
        bar,
        lookahead: Lookahead,
        run: RunContext,
    ) -> None:
        self.out_dir, self.runner, self.settings, self.run = out_dir, runner, settings, run
        self.result, self.bar, self.lookahead = result, bar, lookahead
        self.active: dict[int, SlidePlan] = {}
        self.pending: tuple[SlidePlan, torch.Tensor, torch.Tensor] | None = None
        self.eta = Eta(bar.total)

    # ---- the sampler side (called by the loader, on the main thread) ----------------------

    def work(self) -> Iterator[Work]:
        """Loader items of every slide in order; :data:`IDLE` while the next plan is not ready."""
        self.lookahead.start()  # after the loader forked its workers: no thread is forked
        seq = 0
        while True:
            try:
                plan = self.lookahead.get(timeout=None if seq == 0 else 0.05)
            except queue.Empty:
                yield IDLE
                continue
            if plan is DONE:
                return
            if self._admit(plan, seq):
                size0, size = plan.meta.tile_size_level0, plan.meta.tile_size_px
                for index, blocks in enumerate(plan.items):
                    if plan.dead:
                        break
                    yield Work(
                        seq,
                        index,
                        plan.path,
                        plan.meta.slide_mpp,
                        plan.read,
                        tuple(blocks),
                        size0,
                        size,
                    )
            seq += 1

    def _admit(self, plan: SlidePlan, seq: int) -> bool:
        """Record a plan that needs no encoding; register a ready one. True when ready."""
        if plan.status == "skipped":
            self.result.skipped.append(plan.slide_id)
            self._handled(plan, "already done")
        elif plan.status == "busy":
            self.result.busy.append(plan.slide_id)
            self._handled(plan, "left to another running process")
        elif plan.status == "failed":
            self.fail(plan, plan.error)
        else:
            self.active[seq] = plan
            if plan.claim is not None and plan.claim.took_over:
                self.result.taken_over.append(plan.slide_id)
            self.result.readers[plan.slide_id] = plan.read.kind
            if plan.note is not None:
                self.result.fallbacks[plan.slide_id] = plan.note
                self._say(f"{plan.slide_id}: read with OpenSlide, not directly: {plan.note}")
            return True
        return False

    # ---- the consumer side ----------------------------------------------------------------

    def take(self, out: dict[str, Any]) -> None:
        """Encode one loader item and write the batch before it."""
        self.run.heartbeat()  # planned slides' claims too: they may wait a long slide out
        plan = self.active.get(out["seq"])
        if plan is None or plan.dead:  # idle, or a slide that failed meanwhile
            self.flush()
            return
        if not plan.started:  # the slide's time runs from its first item, decode included
            plan.started = time.perf_counter()
        if "error" in out:
            reason, message = out["error"]
            self.fail(plan, SlideError(message, reason))
            return
        tiles = out.get("tiles")
        if tiles is None:
            try:
                tiles = decode_blocks(out["packed"], plan.meta.tile_size_px, self.runner.device)
            except RuntimeError as exc:  # nvjpeg / libjpeg on corrupt data
                message = f"{plan.path}: cannot decode its JPEG tiles ({first_line(exc)})"
                self.fail(plan, SlideError(message, READ_ERROR))
                return
        features = self.runner(tiles)
        self.flush()
        self.pending = (plan, features, out["coords"])

    def flush(self) -> None:
        """Write the pending batch; finish its slide when that was its last."""
        if self.pending is None:
            return
        plan, features, coords = self.pending
        self.pending = None
        if plan.dead:
            return
        if plan.writer is None:
            dim, dtype = self.runner.encoder.spec.dim, self.settings.feature_dtype
            plan.writer = FeatureWriter(self.out_dir / f"{plan.slide_id}.h5", plan.meta, dim, dtype)
            plan.bar = self._tile_bar(plan)
        plan.writer.append(features.float().cpu().numpy(), coords.numpy())
        plan.written += len(coords)
        plan.bar.update(len(coords))
        if plan.written == plan.n_tiles:
            self._finish(plan)

    def _finish(self, plan: SlidePlan) -> None:
        plan.writer.close()
        plan.bar.close()
        plan.dead = True
        self.result.done.append(plan.slide_id)
        self.result.n_tiles += plan.written
        failures.clear_failure(self.out_dir, plan.slide_id)
        self._drop(plan)
        seconds = time.perf_counter() - plan.started
        self._handled(plan, f"{plan.written} tiles in {seconds:.1f} s ({plan.read.kind})")

    def fail(self, plan: SlidePlan, exc: SlideError) -> None:
        """Record a failed slide, drop what it wrote, and go on."""
        plan.dead = True
        if plan.writer is not None:
            plan.writer.abort()
            plan.bar.close()
        self.result.failed[plan.slide_id] = str(exc)
        failures.record_failure(
            self.out_dir, plan.slide_id, plan.path, exc.reason, str(exc), self.result.shard.rank
        )
        self._say(f"failed: {exc}")
        self._drop(plan)
        self._handled(plan, "failed")

    def _handled(self, plan: SlidePlan, what: str) -> None:
        """One slide dealt with: the bar (terminal only) and one plain progress line (logged)."""
        self.bar.update(1)
        progress_log.info("slide %s: %s %s", self.eta.step(), plan.slide_id, what)

    def _drop(self, plan: SlidePlan) -> None:
        self.run.release(plan.claim)
        for seq in [s for s, p in self.active.items() if p is plan]:
            del self.active[seq]

    def abandon(self) -> None:
        """After an error or interrupt: drop unfinished files, release every claim."""
        self.lookahead.stop()
        for plan in list(self.active.values()):
            plan.dead = True
            if plan.writer is not None:
                plan.writer.abort()
            self._drop(plan)

    def _tile_bar(self, plan: SlidePlan):
        from tqdm.auto import tqdm

        return tqdm(
            total=plan.n_tiles,
            desc=plan.slide_id,
            unit="tile",
            leave=False,
            position=1,
            disable=self.bar.disable,
        )

    def _say(self, text: str) -> None:
        with self.bar.external_write_mode():  # a line above a bar on a terminal
            log.info(text)


def die_with_parent(worker_id: int, parent: int) -> None:
    """Have the kernel end this loader worker when the process that started it ends.

    torch's workers notice a dead parent only between reads (every few seconds, and not while
    decoding a large block): a SIGTERMed ``crcrs extract`` left its readers running for up to
    40 s. ``PR_SET_PDEATHSIG`` (Linux) sends SIGTERM instead, at once; elsewhere nothing changes.
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent was gone before the call took effect
        os._exit(1)


def run_slides(
    mine: list[Path],
    run: RunContext,
    runner: EncoderRunner,
    num_workers: int,
    result: ExtractResult,
) -> None:
    """This process's slides through the planning thread, one loader and the encoder."""
    from tqdm.auto import tqdm

    settings, shard = run.settings, result.shard
    lookahead = Lookahead(
        mine,
        partial(plan_slide, run=run),
        depth=settings.plan_ahead,
        discard=lambda plan: run.release(plan.claim),
    )
    # bars on a terminal only; one plain line per slide goes to the log (mil_crcrs.runlog)
    bars = bars_wanted(settings.progress is not False)
    desc = f"slides (rank {shard.rank})" if shard.world_size > 1 else "slides"
    with tqdm(total=len(mine), desc=desc, unit="slide", disable=not bars) as bar:
        stream = SlideStream(run.out_dir, runner, settings, result, bar, lookahead, run)
        reader = SlideReader()
        loader = torch.utils.data.DataLoader(
            reader,
            batch_size=None,
            sampler=stream.work(),
            num_workers=num_workers,
            pin_memory=runner.device.type == "cuda",
            prefetch_factor=4 if num_workers > 0 else None,
            worker_init_fn=partial(die_with_parent, parent=os.getpid()),
        )
        try:
            for out in loader:
                stream.take(out)
            stream.flush()
        except BaseException:
            stream.abandon()
            raise
        finally:
            lookahead.stop()
            reader.close()
