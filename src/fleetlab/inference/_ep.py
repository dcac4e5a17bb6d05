"""Expert parallelism (EP) for mixture-of-experts models: expert load and all-to-all cost.

With EP degree ``ep`` the ``E`` experts of each MoE layer are sharded over ``ep`` ranks
(``E / ep`` whole experts per rank, each expert further split over the remaining
``tp / ep`` tensor-parallel ranks). The EP ranks are the replica's TP ranks (as vLLM's
``--enable-expert-parallel`` places them), so EP changes neither the GPU count nor the
weight bytes per GPU, only how the expert work and traffic are laid out:

* **expert load** — with uniform top-``k`` routing, ``T`` tokens send ``T·k`` rows to the
  experts; the expected number of distinct experts touched is
  ``E·(1 − (1 − k/E)^T)``, each with ``T·k / touched`` rows; every rank owns ``1/ep`` of
  the experts, so it runs ``touched / ep`` expert GEMMs and ``T·k / ep`` routed rows.
* **dispatch / combine** — each rank dispatches its ``T / ep`` share of the tokens: its
  ``(T/ep)·k`` routed rows go to their experts' ranks, ``(ep − 1)/ep`` of them remote, and
  the results come back the same way (an all-to-all each way over the intra-node link);
  an all-gather re-replicates the ``T`` outputs for the next tensor-parallel attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleetlab.errors import ConfigError

__all__ = ["ExpertLoad", "alltoall_time", "check_ep", "expert_load"]


@dataclass(frozen=True)
class ExpertLoad:
    """Expected per-rank MoE work of one layer for a batch (arrays follow ``tokens``).

    Attributes
    ----------
    routed_rows : ndarray
        Token rows one EP rank's experts process (``T·k / ep``).
    touched_experts : ndarray
        Distinct experts one rank runs (``E·(1 − (1 − k/E)^T) / ep``).
    rows_per_expert : ndarray
        Rows each touched expert processes (``T·k / touched`` over all ranks).
    """

    routed_rows: np.ndarray
    touched_experts: np.ndarray
    rows_per_expert: np.ndarray


def check_ep(num_experts: int, tp: int, ep: int, *, model: str = "model") -> None:
    """Raise ConfigError unless ``ep`` is a valid EP degree for the model and TP degree.

    Parameters
    ----------
    num_experts : int
        Experts per MoE layer (1 for a dense model).
    tp : int
        Tensor-parallel degree (the EP ranks are TP ranks).
    ep : int
        Expert-parallel degree.
    model : str
        Name for the message.

    Raises
    ------
    ConfigError
        ``ep < 1``, ``ep > 1`` on a dense model, ``ep`` not dividing ``tp`` or the experts.
    """
    if ep < 1:
        raise ConfigError(f"field ep: expected an integer >= 1, found {ep}")
    if ep == 1:
        return
    if num_experts <= 1:
        raise ConfigError(f"field ep: {model} is dense (no experts); expected ep=1, found {ep}")
    if tp % ep:
        raise ConfigError(
            f"field ep: expected a divisor of tp={tp} (EP ranks are TP ranks), found {ep}"
        )
    if num_experts % ep:
        raise ConfigError(
            f"field ep: expected a divisor of the {num_experts} experts of {model}, found {ep}"
        )


def expert_load(
    tokens: np.ndarray,
    *,
    num_experts: int | np.ndarray,
    experts_per_token: int | np.ndarray,
    ep: int | np.ndarray = 1,
) -> ExpertLoad:
    """Expected expert work per EP rank for batches of ``tokens`` tokens (uniform routing).

    Parameters
    ----------
    tokens : ndarray
        Tokens in the batch (vectorised).
    num_experts, experts_per_token : int or ndarray
        ``E`` and top-``k`` (arrays broadcast with ``tokens``).
    ep : int or ndarray
        Expert-parallel degree (must divide ``num_experts``).

    Returns
    -------
    ExpertLoad
        All zeros where ``tokens`` is 0; summed over the ``ep`` ranks, ``routed_rows`` is
        ``T·k`` for every ``ep`` (EP moves work, it never changes it).
    """
    t = np.asarray(tokens, dtype=np.float64)
    e = np.asarray(num_experts, dtype=np.float64)
    k = np.asarray(experts_per_token, dtype=np.float64)
    touched = e * (1.0 - (1.0 - k / e) ** t)
    rows = np.where(touched > 0, t * k / np.maximum(touched, 1e-9), 0.0)
    return ExpertLoad(routed_rows=t * k / ep, touched_experts=touched / ep, rows_per_expert=rows)


def alltoall_time(
    tokens: np.ndarray,
    *,
    hidden_size: int,
    experts_per_token: int,
    ep: int,
    link_bytes_per_s: float,
    latency_s: float,
    efficiency: float,
    act_bytes: float = 2.0,
) -> np.ndarray:
    """Seconds of one MoE layer's EP traffic: dispatch + combine all-to-all + all-gather.

    Each all-to-all moves ``(T/ep)·k·h·act_bytes·(ep − 1)/ep`` bytes per rank; the
    all-gather moves ``T·h·act_bytes·(ep − 1)/ep``; each costs ``latency_s`` plus bytes
    over ``link_bytes_per_s · efficiency``. Zero when ``ep == 1`` or ``tokens == 0``.

    Parameters
    ----------
    tokens : ndarray
        Tokens in the batch (vectorised).
    hidden_size, experts_per_token : int
        ``h`` and top-``k``.
    ep : int
        Expert-parallel degree.
    link_bytes_per_s, latency_s, efficiency : float
        Per-GPU unidirectional link bandwidth, fixed latency per collective and the
        fraction of the bandwidth a collective reaches.
    act_bytes : float
        Bytes per activation element.

    Returns
    -------
    ndarray of seconds.
    """
    t = np.asarray(tokens, dtype=np.float64)
    if ep <= 1:
        return np.zeros_like(t)
    remote = (ep - 1) / ep
    bw = link_bytes_per_s * efficiency
    a2a = (t / ep) * experts_per_token * hidden_size * act_bytes * remote / bw
    gather = t * hidden_size * act_bytes * remote / bw
    return np.where(t > 0, 3 * latency_s + 2 * a2a + gather, 0.0)
