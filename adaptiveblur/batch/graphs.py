"""Replay the blur of a repeated image shape from a recorded CUDA graph.

A batch blurs many images of one size with the same settings. On a GPU each blur is a
few hundred small launches driven from Python, under the interpreter lock that the
decoding and encoding threads share, so that launching, not the GPU, is most of the time
an image holds its GPU. A CUDA graph records the launches once and replays them with one
call.

Only work that never waits on the GPU can be recorded: no values read back, no copies
from ordinary host memory. :mod:`adaptiveblur.render` passes the blur its sigma bound so it reads
nothing back (see ``adaptive_blur``'s ``sigma_bound``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch

DeviceFunction = Callable[[torch.Tensor], torch.Tensor]


class ShapeGraphs:
    """Recorded graphs of device functions, one per key (input shape and what else matters).

    A key is recorded the third time it comes: recording costs about one more pass of
    launches, which replays win back only if the key keeps coming. The recordings keep GPU memory (one shared pool, about what the largest one's run takes),
    so at most ``capacity`` are kept, of inputs up to ``max_bytes`` (larger images spend
    their time on the GPU, where a graph saves little). A key is recorded once at most:
    one whose recording was dropped (the least recently used goes first) or failed runs
    as it is from then on, so mixed shapes never record over and over.

    Thread-safe: calls take turns (a recording's input and output are fixed tensors).
    """

    def __init__(
        self,
        device: torch.device,
        *,
        record_at: int = 3,
        capacity: int = 4,
        max_bytes: int = 16 << 20,
        remembered: int = 256,
    ) -> None:
        self.device = device
        if record_at < 2:
            raise ValueError(f"expected record_at >= 2 (earlier runs compile), got {record_at}")
        self._record_at = record_at
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._remembered = remembered
        self._recordings: OrderedDict[Hashable, _Recording] = OrderedDict()
        # key -> sightings so far; None once recorded (or too large): never again
        self._seen: OrderedDict[Hashable, int | None] = OrderedDict()
        self._stream: torch.cuda.Stream | None = None  # made with the first recording
        self._pool: Any = None  # torch.cuda.graph_pool_handle()
        # The batch holds one token per device, but `--devices 0,0` gives two for one GPU.
        self._lock = threading.Lock()

    @property
    def recorded(self) -> tuple[Hashable, ...]:
        """The keys recorded now, least recently used first."""
        return tuple(self._recordings)

    def run(self, key: Hashable, function: DeviceFunction, samples: np.ndarray) -> np.ndarray:
        """``function`` of ``samples`` uploaded to the device, brought back as an array.

        ``function`` must be the same computation whenever ``key`` is (its closures
        included); it gets a device tensor of ``samples``' shape and dtype.
        """
        with self._lock:
            return self._run(key, function, samples)

    def _run(self, key: Hashable, function: DeviceFunction, samples: np.ndarray) -> np.ndarray:
        recording = self._recordings.get(key)
        if recording is not None:
            self._recordings.move_to_end(key)
            return recording.replay(samples)
        sightings = self._seen.pop(key, 0)
        if sightings is not None:
            sightings = sightings + 1 if samples.nbytes <= self._max_bytes else None
        record = sightings == self._record_at
        self._seen[key] = None if record else sightings  # recorded once at most
        while len(self._seen) > self._remembered:
            self._seen.popitem(last=False)
        recording = self._record(function, samples) if record else None
        if recording is None:  # not (yet) recorded, or something in it waits on the GPU
            return function(torch.from_numpy(samples).to(self.device)).cpu().numpy()
        self._recordings[key] = recording
        while len(self._recordings) > self._capacity:
            self._recordings.popitem(last=False)
        return recording.replay(samples)

    def _record(self, function: DeviceFunction, samples: np.ndarray) -> _Recording | None:
        """Record ``function`` for inputs like ``samples`` (``None`` if it cannot be recorded).

        The runs before it compiled its kernels and made its library workspaces, which a
        recording cannot do. Not ``torch.cuda.graph()``: it also collects garbage and
        empties the memory cache each time. All recordings share one memory pool and one
        stream, so a recording seldom allocates device memory afresh (which waits for the
        GPU): safe because replays run one at a time and each result is copied out
        before the next.
        """
        with torch.cuda.device(self.device):
            if self._stream is None:
                self._stream = torch.cuda.Stream()
                self._pool = torch.cuda.graph_pool_handle()
            source = torch.from_numpy(samples).to(self.device)
            graph = torch.cuda.CUDAGraph()
            self._stream.wait_stream(torch.cuda.current_stream())
            try:
                with torch.cuda.stream(self._stream):
                    # thread_local: other threads may use other GPUs (or the CPU) meanwhile.
                    graph.capture_begin(pool=self._pool, capture_error_mode="thread_local")
                    try:
                        result = function(source)
                    finally:
                        graph.capture_end()
            except RuntimeError:
                return None
            torch.cuda.current_stream().wait_stream(self._stream)
        return _Recording(graph, source, result, function)


class _Recording:
    """One recorded graph with its fixed input and output tensors."""

    def __init__(
        self,
        graph: torch.cuda.CUDAGraph,
        source: torch.Tensor,
        result: torch.Tensor,
        function: DeviceFunction,
    ) -> None:
        self._graph = graph
        self._source = source
        self._result = result
        self._function = function  # keeps alive the tensors its closures lend the graph

    def replay(self, samples: np.ndarray) -> np.ndarray:
        """The recorded function of ``samples`` (of the recorded shape and dtype)."""
        with torch.cuda.device(self._source.device):
            self._source.copy_(torch.from_numpy(samples))
            self._graph.replay()
            return self._result.cpu().numpy()
