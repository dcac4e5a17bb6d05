"""Fixtures of the workload tests: real traces from the mirror, loaded once per session."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from fleetlab import traces


@pytest.fixture(scope="session")
def azure_code(shared_data: Path) -> pl.DataFrame:
    return traces.load(shared_data / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_code.csv")


@pytest.fixture(scope="session")
def azure_conv(shared_data: Path) -> pl.DataFrame:
    return traces.load(shared_data / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_conv.csv")


@pytest.fixture(scope="session")
def mooncake_conv(shared_data: Path) -> pl.DataFrame:
    return traces.load(shared_data / "mooncake-kimi-2025" / "conversation_trace.jsonl")


@pytest.fixture(scope="session")
def alibaba_tasks(shared_data: Path) -> pl.DataFrame:
    """Alibaba 2018 batch tasks (one hour, 67,634 tasks) as a canonical vms table."""
    return traces.load(shared_data / "alibaba-2018-batch-spar-sample" / "sample_tasks.csv.gz")


@pytest.fixture(scope="session")
def alibaba_2017_tasks(shared_data: Path) -> pl.DataFrame:
    """Alibaba 2017 batch tasks (17 h, 80,553 tasks created in batches on a 1 s grid)."""
    return traces.load(shared_data / "alibaba-2017-batch-task" / "batch_task.csv.gz")


@pytest.fixture(scope="session")
def alibaba_gpu_2023(shared_data: Path) -> pl.DataFrame:
    """Alibaba GPU 2023 pods (149 days, 8,152 pods; nearly all in the last 35 days)."""
    return traces.load(shared_data / "alibaba-gpu-2023-openb" / "openb_pod_list_default.csv")


@pytest.fixture(scope="session")
def alibaba_gpu_2025(shared_data: Path) -> pl.DataFrame:
    """Alibaba GPU 2025 DLRM instances (31 days, 16,591 with a creation time)."""
    return traces.load(shared_data / "alibaba-gpu-2025-dlrm" / "disaggregated_DLRM_trace.csv")


@pytest.fixture(scope="session")
def hotel_spans(shared_data: Path) -> pl.DataFrame:
    """TraceWeaver DeathStarBench hotel reservation at load 50 (1,000 traces, 11,000 spans)."""
    return traces.load(
        shared_data / "traceweaver-deathstarbench" / "hotel_reservation" / "hotel_load50.jsonl.gz"
    )


@pytest.fixture(scope="session")
def nezha_spans(shared_data: Path) -> pl.DataFrame:
    """Nezha OnlineBoutique, 2022-08-23 17:00 (502 traces, 22,969 spans over 60 s)."""
    return traces.load(
        shared_data / "nezha-rca" / "construct_data" / "2022-08-23" / "trace" / "17_00_trace.csv.gz"
    )
