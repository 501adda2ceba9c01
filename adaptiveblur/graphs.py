"""Replay the blur of a repeated image shape from a recorded CUDA graph.

A batch blurs many images of one size with the same settings. On a GPU each blur is a
few hundred small launches driven from Python, under the interpreter lock that the
decoding and encoding threads share: on a 16-core host that launching, not the GPU, is
most of the time an image holds its GPU (about 5 ms for a 1 MP photo; 2 ms replayed from
a graph, copies included). A CUDA graph records the launches once and replays them with
one call.

Only work that never waits on the GPU can be recorded: no values read back, no copies
from ordinary host memory. The pipeline passes the blur its sigma bound so it reads
nothing back (see ``adaptive_blur``'s ``sigma_bound``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np
import torch

DeviceFunction = Callable[[torch.Tensor], torch.Tensor]


class ShapeGraphs:
    """Recorded graphs of device functions, one per key (input shape and what else matters).

    A key is recorded the second time it comes, so one-off shapes run as they are
    without paying for a recording. Each recording holds GPU memory of its own (about
    what one run of the function takes), so at most ``capacity`` are kept, of inputs up
    to ``max_bytes`` (larger images spend their time on the GPU, where a graph saves
    little); a key whose recording was dropped (the least recently used goes first) or
    failed runs as it is from then on, so mixed shapes never record over and over.

    Not thread-safe: one caller at a time per device (the batch holds a device token).
    """

    def __init__(
        self,
        device: torch.device,
        *,
        capacity: int = 4,
        max_bytes: int = 16 << 20,
        remembered: int = 256,
    ) -> None:
        self.device = device
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._remembered = remembered
        self._recordings: OrderedDict[Hashable, _Recording] = OrderedDict()
        self._seen: OrderedDict[Hashable, bool] = OrderedDict()  # key -> may be recorded

    @property
    def recorded(self) -> tuple[Hashable, ...]:
        """The keys recorded now, least recently used first."""
        return tuple(self._recordings)

    def run(self, key: Hashable, function: DeviceFunction, samples: np.ndarray) -> np.ndarray:
        """``function`` of ``samples`` uploaded to the device, brought back as an array.

        ``function`` must be the same computation whenever ``key`` is (its closures
        included); it gets a device tensor of ``samples``' shape and dtype.
        """
        recording = self._recordings.get(key)
        if recording is not None:
            self._recordings.move_to_end(key)
            return recording.replay(samples)
        recordable = self._seen.pop(key, None)
        # None the first time, True the second: a key is recorded once at most.
        self._seen[key] = recordable is None and samples.nbytes <= self._max_bytes
        while len(self._seen) > self._remembered:
            self._seen.popitem(last=False)
        if not recordable:  # first time (None), too large, dropped or failed (False)
            return function(torch.from_numpy(samples).to(self.device)).cpu().numpy()
        recording, result = _Recording.record(function, samples, self.device)
        if recording is not None:  # None: something in it waits on the GPU
            self._recordings[key] = recording
            while len(self._recordings) > self._capacity:
                self._recordings.popitem(last=False)
        return result


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

    @classmethod
    def record(
        cls, function: DeviceFunction, samples: np.ndarray, device: torch.device
    ) -> tuple[_Recording | None, np.ndarray]:
        """Run ``function`` on ``samples`` as it is, then record it.

        Returns the recording (``None`` if it cannot be recorded) and that first result.
        """
        source = torch.from_numpy(samples).to(device)
        with torch.cuda.device(device):
            # The first run goes on a side stream, as recording wants (kernels compiled,
            # library workspaces made).
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                first = function(source).cpu().numpy()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                # thread_local: other threads may use other GPUs (or the CPU) meanwhile.
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    result = function(source)
            except RuntimeError:
                return None, first
        return cls(graph, source, result, function), first

    def replay(self, samples: np.ndarray) -> np.ndarray:
        """The recorded function of ``samples`` (of the recorded shape and dtype)."""
        with torch.cuda.device(self._source.device):
            self._source.copy_(torch.from_numpy(samples))
            self._graph.replay()
            return self._result.cpu().numpy()
