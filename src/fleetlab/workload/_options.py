"""The options of :func:`~fleetlab.workload.fit` (shared by the arrival and model fitters)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ArrivalChoice = Literal["gamma", "mmpp", "auto"]
"""Burstiness choices of :func:`fit`: Gamma renewal, MMPP, or the better by IDC."""


class FitOptions(BaseModel):
    """Options of :func:`fit` (defaults are the documented choices).

    ``min_events_per_bin``: the rate curve uses the smallest candidate bin with at
    least this many events per bin on average (so bins are not Poisson noise);
    ``max_levels``: at most this many bins per period; ``ks_threshold``: a parametric
    family must reach this KS distance or the marginal is empirical (and
    ``renewal_ks_threshold`` the same for Gamma inter-arrivals);
    ``entity_top``: entities whose shares are stored explicitly; ``entity_own_sizes``:
    how many of the biggest entities get their own size marginals, each needing at
    least ``entity_min_events`` events; ``copula_sample``: rows used for the copula;
    ``mmpp_bin_factor``: an MMPP's rate curve uses bins with this many times
    ``min_events_per_bin`` (256 events by default), so its hidden states carry the
    modulation inside a bin instead of adding it again on top of a fine curve;
    ``mmpp_max_states``: the MMPP tries 2..this many hidden states (BIC picks one).
    Spans: ``span_coverage``: keep the fewest call-tree templates that cover this share
    of the traces, at most ``span_max_templates``. ``level_bands``: ``"auto"`` tries a
    renewal per rate-level band (:func:`fit_bands`) and keeps it when the model's own
    fidelity report improves by 10 %; ``"off"`` never does. ``trend_window``: each
    day's trend factor is the ratio of observed to expected events over a 7-day window;
    ``"edge"`` takes, per day, the most homogeneous of the trailing, centred and leading
    windows (least Poisson deviance, so a step or ramp is not pulled early or late),
    ``"centred"`` always the centred one (the model before). ``clusters``: ``"auto"``
    fits a cluster process (:func:`cluster_instants`) when the short gaps of an
    unbatched, ungridded trace come in runs, and keeps it when the model's own fidelity
    report improves by 10 %; ``"on"`` keeps it whenever the runs test finds clusters;
    ``"off"`` never fits one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_events_per_bin: float = Field(32.0, gt=0)
    max_levels: int = Field(2048, ge=1)
    ks_threshold: float = Field(0.02, gt=0, le=1)
    renewal_ks_threshold: float = Field(0.05, gt=0, le=1)
    entity_top: int = Field(1000, ge=1)
    entity_own_sizes: int = Field(8, ge=0)
    entity_min_events: int = Field(500, ge=10)
    copula_sample: int = Field(200_000, ge=100)
    mmpp_bin_factor: float = Field(8.0, ge=1.0)
    mmpp_max_states: int = Field(4, ge=2, le=4)
    span_coverage: float = Field(0.99, gt=0, le=1)
    span_max_templates: int = Field(200, ge=1)
    level_bands: Literal["auto", "off"] = Field(
        "auto",
        description="rate-level-dependent renewal: tried and kept when it improves the own"
        " fidelity report (auto), or never (off)",
    )
    clusters: Literal["auto", "on", "off"] = Field(
        "auto",
        description="cluster process (batches spread over short gaps): tried when the short"
        " gaps come in runs and kept when it improves the own fidelity report (auto), kept"
        " whenever the runs test finds clusters (on), or never (off)",
    )
    trend_window: Literal["edge", "centred"] = Field(
        "edge",
        description="7-day trend window per day: the most homogeneous of trailing/centred/"
        "leading (edge, keeps steps in place) or always centred",
    )
