"""Micro-batching the prompt embedder: concurrent submits share one encoder call.

One embedder thread per process. A caller hands its prompt over and waits; the thread takes every prompt
waiting at that moment (up to `max_batch`) and embeds them in one call. There is no collection window: an
idle process embeds a lone prompt at once, and a busy one batches whatever arrived while the previous call
ran, so the encoder's fixed cost per call (tokenising, module dispatch) is paid once per batch, not once per
prompt, and the callers' threads wait without holding the GIL.

The live batcher encodes with `scheduler.onnx_embedder` (the same MiniLM under ONNX Runtime, ~2× less CPU per
prompt; torch when it cannot run). A batched embedding equals the one-at-a-time embedding up to float rounding
(~1e-7: the encoder pads a batch to its longest prompt, and matrix kernels sum in another order);
tests/test_submit_path_routing.py checks that routing decides the same on 1,000 prompts.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .embeddings import embed_texts
from .onnx_embedder import live_embedder

MAX_BATCH = 32  # the cost per prompt hardly falls beyond this; a larger batch only delays its first caller


@dataclass
class _Pending:
    text: str
    done: threading.Event = field(default_factory=threading.Event)
    vector: np.ndarray | None = None
    error: BaseException | None = None


class EmbeddingBatcher:
    """Embeds prompts from many threads, batching those that wait at the same time."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray] = embed_texts, max_batch: int = MAX_BATCH) -> None:
        self._embed = embed
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._owner_pid: int | None = None  # the process whose thread serves the queue (a fork has none)

    def embed(self, text: str, timeout_s: float | None = 60.0) -> np.ndarray:
        """The prompt's embedding (float32, L2-normalised, 384-d); the encoder's exception if it failed."""
        pending = _Pending(text)
        self._ensure_thread()
        self._queue.put(pending)
        if not pending.done.wait(timeout_s):
            raise TimeoutError(f"the prompt embedder did not answer within {timeout_s} s")
        if pending.error is not None:
            raise pending.error
        return pending.vector

    def _ensure_thread(self) -> None:
        if self._owner_pid == os.getpid():
            return
        with self._lock:
            if self._owner_pid != os.getpid():  # first use, or first use after a fork (threads do not survive it)
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._serve, args=(self._queue,), name="prompt-embedder", daemon=True).start()
                self._owner_pid = os.getpid()

    def _serve(self, waiting: queue.SimpleQueue) -> None:
        while True:
            batch = [waiting.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(waiting.get_nowait())
                except queue.Empty:
                    break
            self._answer(batch)

    def _answer(self, batch: list[_Pending]) -> None:
        try:
            vectors = self._embed([p.text for p in batch])
            for pending, vector in zip(batch, vectors, strict=True):
                pending.vector = vector
        except BaseException as exc:  # handed to every caller of the batch; the thread keeps serving
            for pending in batch:
                pending.error = exc
        finally:
            for pending in batch:
                pending.done.set()


def _live_embed(texts: list[str]) -> np.ndarray:
    """The live path's encoder (ONNX Runtime when it can run, else torch), chosen on first use."""
    return live_embedder()(texts)


_shared = EmbeddingBatcher(_live_embed)


def embed_prompt(text: str) -> np.ndarray:
    """One prompt's embedding through this process's shared batcher (the live submit path uses this)."""
    return _shared.embed(text)
