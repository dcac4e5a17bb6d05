"""Per-(scorer, request shape) heaps of server classes keyed by score.

A resource-only scorer gives a class of identical servers a score that depends only on
the class's (immutable) resource state and on the request's shape (demand, GPU count,
per-GPU share, GPU model). So for each (scorer, shape) seen, a heap of ``(score, uid,
slot)`` over the feasible classes stays valid while classes come and go: a class that
dies is dropped lazily when it surfaces (its slot's uid no longer matches), and classes
created since the heap last looked are read from the classes' creation log and scored
in one vectorised call. A decision then pops the classes tied at the minimum score
(same tolerance as the full scan) and takes the lowest-numbered member among them:
exactly the decision of scoring every feasible class.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fleetlab.placement._state import Ask, ServerClasses

ScoreSlots = Callable[[np.ndarray], np.ndarray]
PyScore = Callable[[list[float], list[float], list[float]], float]

_MAX_INDEXES = 512


class ShapeIndex:
    """The heap of one (scorer, request shape); see the module docstring."""

    __slots__ = ("epoch", "heap", "need", "pos")

    def __init__(self, epoch: int, need: np.ndarray) -> None:
        self.epoch = epoch
        self.heap: list[tuple[float, int, int]] = []
        self.need = need
        self.pos = 0


def _need(classes: ServerClasses, ask: Ask) -> np.ndarray:
    """Per-dimension lower bound on a fitting class's free capacity (-inf: no check)."""
    gpu_col = classes.state.gpu_col
    return np.array(
        [
            need - 1e-9 if need > 0 and j != gpu_col else -np.inf
            for j, need in enumerate(ask.demand.tolist())
        ]
    )


def fits_slots(classes: ServerClasses, ask: Ask, slots: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Mask over ``slots`` (live class slots) of those that can host ``ask``.

    The same test as :meth:`ServerClasses.fits`, with ``need`` from :func:`_need`.
    """
    st = classes.state
    mask = (classes.free[slots] >= need).all(axis=1)
    if ask.gpu_count > 0:
        if ask.gpu_milli < 1000:
            mask &= classes.gpu_max[slots] >= ask.gpu_milli
        else:
            mask &= classes.gpu_whole[slots] >= ask.gpu_count
        if ask.gpu_model:
            mask &= st.model_mask(ask.gpu_model)[classes.first[slots]]
    return mask


def choose(
    classes: ServerClasses,
    key: tuple,
    ask: Ask,
    score_slots: ScoreSlots,
    py_score: PyScore | None = None,
) -> int:
    """The server the scorer of ``key`` picks for ``ask`` (-1 when nothing fits).

    ``score_slots`` scores class slots (vectorised); ``py_score``, when given, is the
    scorer's scalar twin (bit-identical), used for the few new classes of a request
    without GPUs.
    """
    live = classes.live
    idx = classes.indexes.get(key)
    if idx is None or idx.epoch != classes.epoch:
        if len(classes.indexes) >= _MAX_INDEXES:
            classes.indexes.clear()
        idx = ShapeIndex(classes.epoch, _need(classes, ask))
        classes.indexes[key] = idx
        idx.pos = len(classes.log)
        _push_numpy(classes, ask, idx, np.flatnonzero(classes.alive), score_slots)
    elif idx.pos < len(classes.log):
        log, log_uid = classes.log, classes.log_uid
        new = [s for s, u in zip(log[idx.pos :], log_uid[idx.pos :], strict=True) if live[s] == u]
        idx.pos = len(log)
        if new:
            if py_score is not None and ask.gpu_count == 0:
                _push_python(classes, ask, idx, new, py_score)
            else:
                _push_numpy(classes, ask, idx, np.array(new, dtype=np.int64), score_slots)
    heap = idx.heap
    while heap:
        best, u, slot = heap[0]
        if live[slot] == u:
            break
        heapq.heappop(heap)
    else:
        return -1
    first = classes.first
    thr = best + 1e-9 * max(1.0, abs(best))
    node = int(first[slot])
    if len(heap) == 1 or (heap[1][0] > thr and (len(heap) < 3 or heap[2][0] > thr)):
        return node
    kept = [heapq.heappop(heap)]
    while heap and heap[0][0] <= thr:
        e = heapq.heappop(heap)
        if live[e[2]] == e[1]:
            kept.append(e)
            node = min(node, int(first[e[2]]))
    for e in kept:
        heapq.heappush(heap, e)
    return node


def _push_numpy(
    classes: ServerClasses, ask: Ask, idx: ShapeIndex, new: np.ndarray, score_slots: ScoreSlots
) -> None:
    new = new[fits_slots(classes, ask, new, idx.need)]
    if new.size:
        scores = score_slots(new).tolist()
        live = classes.live
        for s, slot in zip(scores, new.tolist(), strict=True):
            heapq.heappush(idx.heap, (s, live[slot], slot))


def _push_python(
    classes: ServerClasses, ask: Ask, idx: ShapeIndex, new: list[int], py_score: PyScore
) -> None:
    # a request without GPUs: the capacity test of fits_slots, row by row
    need = idx.need.tolist()
    dem = ask.demand.tolist()
    free, inv, live, heap = classes.free, classes.inv, classes.live, idx.heap
    for slot in new:
        row = free[slot].tolist()
        if all([f >= n for f, n in zip(row, need, strict=True)]):
            heapq.heappush(heap, (py_score(row, inv[slot].tolist(), dem), live[slot], slot))
