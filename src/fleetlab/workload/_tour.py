"""The workload stop of ``fleetlab tour``: characterize, fit, synthesize, compare."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import polars as pl

from fleetlab import traces
from fleetlab.report import Report
from fleetlab.workload._characterize import characterize
from fleetlab.workload._compare import compare
from fleetlab.workload._fit import fit
from fleetlab.workload._model import (
    Arrival,
    Copula,
    Marginal,
    RateCurve,
    Renewal,
    Source,
    WorkloadModel,
    save_model,
)
from fleetlab.workload._reports import add_comparison, characterization_report, model_section
from fleetlab.workload._synth import synth

#: where the real trace sits in the mirror (FLEETLAB_MIRROR)
MIRROR_TRACE = ("azure-llm-inference-2023", "AzureLLMInferenceTrace_conv.csv")

#: a conversation-like workload whose parameters are written here, used when the mirror
#: is absent: one hour at 5.5 req/s on average with a +-25 % swell over the hour (60 s
#: bins), Poisson-like arrivals (renewal CV 1), lognormal prompt/output tokens with the
#: medians the Splitwise paper reports for Azure conversation (1,020 / 129 tokens) and a
#: weak positive dependence between them.
BUILTIN = MappingProxyType(
    {
        "rate_per_s": 5.5,
        "swell": 0.25,
        "bin_s": 60.0,
        "duration_s": 3600.0,
        "cv": 1.0,
        "prompt_median": 1020.0,
        "prompt_sigma": 1.0,
        "output_median": 129.0,
        "output_sigma": 0.9,
        "correlation": 0.1,
    }
)


def builtin_model() -> WorkloadModel:
    """The built-in conversation-like model (parameters in ``BUILTIN``)."""
    p = BUILTIN
    n = int(p["duration_s"] / p["bin_s"])
    phase = np.arange(n) / n
    levels = p["rate_per_s"] * (1 + p["swell"] * np.sin(2 * math.pi * phase))

    def lognormal(median: float, sigma: float) -> Marginal:
        return Marginal(
            kind="parametric",
            family="lognormal",
            params={"s": sigma, "loc": 0.0, "scale": median},
            integer=True,
            lower=1.0,
            upper=median * 200,
        )

    r = p["correlation"]
    return WorkloadModel(
        table="requests",
        time_column="arrival_s",
        source=Source(
            table="requests",
            rows=int(p["rate_per_s"] * p["duration_s"]),
            duration_s=p["duration_s"],
            path="built-in parameters",
        ),
        arrival=Arrival(
            rate=RateCurve(
                bin_s=p["bin_s"],
                period_s=p["duration_s"],
                levels=[float(x) for x in levels],
                mean_rate_per_s=p["rate_per_s"],
            ),
            renewal=Renewal(cv=p["cv"]),
        ),
        fields={
            "prompt_tokens": lognormal(p["prompt_median"], p["prompt_sigma"]),
            "output_tokens": lognormal(p["output_median"], p["output_sigma"]),
        },
        copula=Copula(fields=["prompt_tokens", "output_tokens"], correlation=[[1.0, r], [r, 1.0]]),
    )


def _real_trace(seed: int) -> tuple[pl.DataFrame, str]:
    mirror = os.environ.get("FLEETLAB_MIRROR")
    if mirror:
        path = Path(mirror, *MIRROR_TRACE)
        if path.is_file():
            return traces.load(path), f"real trace {path} (FLEETLAB_MIRROR)"
    return builtin_model().sample(
        seed=seed + 1000
    ), "trace synthesized from built-in parameters (no mirror)"


def tour_stop(workdir: Path, *, seed: int) -> tuple[Report, dict[str, Any]]:
    """Characterize a trace, fit a model, synthesize 10x the load, compare with the real one.

    Uses the Azure LLM 2023 conversation trace from ``FLEETLAB_MIRROR`` when present,
    else a trace drawn from :func:`builtin_model`. Writes ``workload_model.yaml`` and
    ``workload_synth.parquet`` in ``workdir``.

    Returns
    -------
    report, summary
        The report sections and headline numbers (source, rows, medians, CVs, verdict).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    real, source = _real_trace(seed)
    ch = characterize(real, seed=seed)
    model, diagnostics = fit(real, seed=seed, source_path=source)
    save_model(model, workdir / "workload_model.yaml", overwrite=True)
    out = synth(model, workdir / "workload_synth.parquet", scale=1.0, seed=seed, overwrite=True)
    synthetic = pl.read_parquet(out["path"])
    cmp = compare(real, synthetic, seed=seed)
    scaled = model.sample(scale=10.0, seed=seed)
    cmp10 = compare(real, scaled, scale=10.0, seed=seed)
    rep = characterization_report(ch, title="workload")
    rep.sections[0].title = "Workload: characterize, fit, synthesize, compare"
    rep.sections[0].text(
        f"Source: {source}. The model is fitted on it, a synthetic trace of the "
        "same length is drawn (seeded) and compared with it statistic by statistic; "
        "a 10x-scaled trace checks that shape and burstiness survive scaling."
    )
    model_section(rep, model, diagnostics)
    add_comparison(rep, cmp)
    rep.sections[-1].title = "Fidelity at scale 1"
    add_comparison(rep, cmp10)
    rep.sections[-1].title = "Fidelity at scale 10 (rates divided by 10)"
    a = ch.metrics.get("arrivals", {})
    sizes = ch.metrics.get("sizes", {})
    summary = {
        "source": source,
        "rows": real.height,
        "median_prompt_tokens": sizes.get("prompt_tokens", {}).get("median"),
        "median_output_tokens": sizes.get("output_tokens", {}).get("median"),
        "iat_cv": a.get("iat_cv"),
        "renewal_cv": model.arrival.renewal.cv,
        "synth_rows": out["rows"],
        "fidelity_passed": cmp.passed,
        "fidelity_failed": cmp.metrics["failed"],
        "scaled10_passed": cmp10.passed,
        "model": str(workdir / "workload_model.yaml"),
    }
    return rep, summary
