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
