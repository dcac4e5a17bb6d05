"""Fleet readers on the real public files of the mirror, checked against published figures."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from fleetlab import traces


def test_azure_llm_2023_matches_the_splitwise_paper(shared_data: Path) -> None:
    folder = shared_data / "azure-llm-inference-2023"
    conv = traces.load(folder / "AzureLLMInferenceTrace_conv.csv")
    code = traces.load(folder / "AzureLLMInferenceTrace_code.csv")
    assert (conv.height, code.height) == (19_366, 8_819)  # SOURCES.md
    # Splitwise (ISCA'24): conversation median 1020 prompt / 129 output tokens; coding 13 out
    assert conv["prompt_tokens"].median() == 1020
    assert conv["output_tokens"].median() == 129
    assert code["output_tokens"].median() == 13
    # one hour each, seconds from the first request, in file order
    assert conv["arrival_s"][0] == 0.0
    assert conv["arrival_s"][1] == pytest.approx(4.314579)  # 18:15:50.995169 - 18:15:46.68059
    assert 3_400 < conv["arrival_s"].max() < 3_600
    assert conv["arrival_s"].is_sorted()
    assert conv["request_id"].to_list()[:3] == [0, 1, 2]


def test_vidur_retimed_azure_traces(shared_data: Path) -> None:
    folder = shared_data / "vidur-profiles" / "processed_traces"
    vidur = traces.load(folder / "splitwise_conv.csv")
    azure = traces.load(
        shared_data / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_conv.csv"
    )
    assert traces.detect(folder / "splitwise_conv.csv").name == "vidur-trace"
    # the same requests (SOURCES.md: the Azure 2023 trace re-timed by vidur)
    assert vidur.height == azure.height == 19_366
    assert vidur["prompt_tokens"].equals(azure["prompt_tokens"])
    assert vidur["arrival_s"][1] == pytest.approx(azure["arrival_s"][1])


def test_mooncake_keeps_prefix_blocks(shared_data: Path) -> None:
    conv = traces.load(shared_data / "mooncake-kimi-2025" / "conversation_trace.jsonl")
    synth = traces.load(shared_data / "mooncake-kimi-2025" / "synthetic_trace.jsonl")
    assert (conv.height, synth.height) == (12_031, 3_993)
    assert conv["prefix_ids"][0].to_list() == list(range(14))
    # one hash id per 512-token block of the prompt, on every request
    blocks = (conv["prompt_tokens"] / 512).ceil().cast(pl.Int64)
    assert (conv["prefix_ids"].list.len() == blocks).all()
    assert conv["arrival_s"].max() == pytest.approx(3536.999)  # timestamp ms / 1000


@pytest.mark.parametrize(
    ("archive", "clients", "without", "windows"),
    [
        ("multimodal_mm-image.tar.gz", 35, 0, 144),
        ("reason_deepseek-r1.tar.gz", 73, 0, 144),
        ("language_m-small.tar.gz", 43, 5, 2016),
    ],
)
def test_servegen_client_profiles(
    shared_data: Path, archive: str, clients: int, without: int, windows: int
) -> None:
    path = shared_data / "servegen-alibaba-bailian-2025" / archive
    fmt = traces.detect(path)
    assert fmt.table == "client_profiles" and fmt.quality is not None
    frame = traces.load(path)
    quality = fmt.quality(frame)  # what inspect reports
    # the clients SOURCES.md lists as having no dataset.json keep their rate rows
    assert quality["clients"] == clients
    assert quality["clients_without_distributions"] == without
    per_client = frame.group_by("client").len()
    assert per_client["len"].max() == windows  # 10-minute windows (1 day or 14 days)
    assert (frame["window_s"] == 600).all()
    # a Gamma(shape k, scale θ) inter-arrival law has rate 1/(kθ) and CV 1/sqrt(k)
    gamma = frame.filter(pl.col("pattern") == "Gamma", pl.col("rate_per_s") > 0.05)
    implied = 1 / (gamma["pattern_shape"] * gamma["pattern_scale"])
    assert ((implied / gamma["rate_per_s"]).median()) == pytest.approx(1.0, rel=0.1)
    assert (1 / gamma["pattern_shape"].sqrt() / gamma["cv"]).median() == pytest.approx(1, rel=0.05)
    # the PDFs are probability distributions aligned to 6-hour windows
    dist = frame.filter(pl.col("output_tokens_probs").list.len() > 0)
    assert dist.height > 0
    assert (dist["window_start_s"] % 21_600 == 0).all()
    assert (dist["dist_window_s"] == 21_600).all()
    sums = dist["output_tokens_probs"].list.sum()
    assert ((sums - 1).abs() < 1e-6).all()
    lengths = dist["output_tokens_values"].list.len() == dist["output_tokens_probs"].list.len()
    assert lengths.all()


def test_servegen_multimodal_and_reasoning_columns(shared_data: Path) -> None:
    folder = shared_data / "servegen-alibaba-bailian-2025"
    image = traces.load(folder / "multimodal_mm-image.tar.gz")
    assert image["image_tokens_values"].drop_nulls().list.len().sum() > 0
    assert image["model"].unique().to_list() == ["mm-image"]
    reason = traces.load(folder / "reason_deepseek-r1.tar.gz")
    ratios = reason["reason_ratio_values"].drop_nulls().explode().drop_nulls()
    assert ratios.min() >= 0 and ratios.max() <= 1


def test_functions_2019_totals_match_sources(shared_data: Path) -> None:
    folder = shared_data / "azure-functions-2019-sample"
    five_hundred = traces.load(folder / "invitro-traces-500")
    assert five_hundred["count"].sum() == 3_037_902
    assert five_hundred.select(pl.col("function").n_unique()).item() == 500
    assert five_hundred["minute"].min() == 480 and five_hundred["minute"].max() == 959
    triggers = five_hundred.unique("function").group_by("trigger").len()
    assert dict(triggers.iter_rows())["timer"] == 247
    assert five_hundred["duration_ms"].null_count() == 0
    assert five_hundred["memory_mb"].null_count() == 0
    assert (
        traces.load(folder / "invitro-traces-10" / "invocations.csv")["count"].sum() == 13_037_064
    )
    five = traces.load(folder / "invitro-traces-5")
    assert five["count"].sum() == 25_268_396
    assert (five["ts_s"] == (five["minute"] - 1) * 60).all()


def test_functions_2019_joins_duration_and_memory(shared_data: Path) -> None:
    folder = shared_data / "azure-functions-2019-sample" / "invitro-traces-10"
    frame = traces.load(folder / "invocations.csv")
    first = frame.filter(pl.col("function").str.starts_with("47658c9c"))
    assert first["duration_ms"].unique().to_list() == [306.0]  # durations.csv Average
    assert first["memory_mb"].unique().to_list() == [204.0]  # memory.csv AverageAllocatedMb
    daily = traces.load(folder / "durations.csv")
    assert daily.filter(pl.col("function").str.starts_with("47658c9c"))["count"].item() == 7_726_495


def test_functions_2021(shared_data: Path) -> None:
    frame = traces.load(shared_data / "azure-functions-2021-sample" / "Azure2021_200.csv")
    assert frame.height == 199 and (frame["count"] == 1).all()
    assert frame["ts_s"][0] == pytest.approx(0.07949090003967285 - 0.078)
    assert frame["duration_ms"][0] == pytest.approx(78.0)


def test_azure_vm_2017_cpu_matrix(shared_data: Path) -> None:
    folder = shared_data / "azure-vm-2017-cpu-100vms"
    usage = traces.load(folder / "microsoft_avg_100.csv.gz")
    assert usage.height == 8_004 * 100
    assert usage["vm_id"].n_unique() == 100
    assert usage["ts_s"].max() == (8_004 - 1) * 300
    first = usage.filter(pl.col("vm_id") == "1633748").sort("ts_s")
    assert first["cpu_avg"][0] == pytest.approx(44.459092)
    assert (usage["cpu_max"] >= usage["cpu_avg"] - 1e-9).all()  # the max sibling joined
    periodic = traces.load(folder / "periodic_avg_78.csv.gz")
    assert periodic["vm_id"].n_unique() == 77  # VM 83972 is listed for two periods
    assert periodic.height == 8_400 * 77
    max_only = traces.load(folder / "microsoft_max_100.csv.gz")
    assert max_only.sort("vm_id", "ts_s").equals(usage.sort("vm_id", "ts_s"))


def test_alibaba_2018_spar_sample(shared_data: Path) -> None:
    tasks = traces.load(shared_data / "alibaba-2018-batch-spar-sample" / "sample_tasks.csv.gz")
    assert tasks.height == 67_634 and tasks["job"].n_unique() == 16_749
    assert tasks["vm_id"][0] == "j_1446403/R23_22"
    assert tasks["cores"][0] == 0.5 and tasks["memory_norm"][0] == pytest.approx(0.003)
    assert tasks["instances"].sum() == 3_056_536  # = rows of sample_instances
    assert (tasks["deleted_s"] - tasks["created_s"] >= 0).all()


@pytest.mark.slow
def test_alibaba_2018_instances_join_their_tasks(shared_data: Path) -> None:
    path = shared_data / "alibaba-2018-batch-spar-sample" / "sample_instances.csv.gz"
    frame = traces.load(path)
    assert frame.height == 3_056_536
    assert frame["cores"].null_count() == 0  # every instance found its task's plan_cpu
    row = frame.row(0, named=True)
    assert row["vm_id"] == "ins_134260461" and row["deleted_s"] == 52.0
    assert row["used_cores"] == pytest.approx(0.74)
    assert row["cpu_avg"] == pytest.approx(74.0 / 50.0 * 100)


def test_alibaba_2017_batch_task_reports_its_quirks(shared_data: Path) -> None:
    info = traces.inspect(shared_data / "alibaba-2017-batch-task" / "batch_task.csv.gz")
    assert info["rows"] == 80_553
    q = info["quality"]
    assert q["rows_without_cpu_request"] == 9_017  # empty plan_cpu: kept, counted
    assert q["negative_times"] > 0
    frame = traces.load(shared_data / "alibaba-2017-batch-task" / "batch_task.csv.gz")
    assert dict(frame.group_by("status").len().iter_rows())["Terminated"] == 67_013
    assert frame["job"].n_unique() == 12_951
    assert frame.filter(pl.col("status") == "Waiting")["deleted_s"].null_count() == 8_847


def test_alibaba_gpu_traces(shared_data: Path) -> None:
    pods = traces.load(shared_data / "alibaba-gpu-2023-openb" / "openb_pod_list_default.csv")
    assert pods.height == 8_152
    first = pods.row(0, named=True)
    assert (first["cores"], first["memory_gb"], first["gpus"], first["gpu_milli"]) == (
        12.0,
        16.0,
        1.0,
        1000,
    )
    assert first["priority"] == "LS" and first["deleted_s"] == 12_537_496
    nodes = traces.load(shared_data / "alibaba-gpu-2023-openb" / "openb_node_list_all_node.csv")
    assert nodes.height == 1_523 and nodes.filter(pl.col("gpus") > 0).height == 1_213
    assert nodes["memory_gb"][0] == 256.0
    dlrm = traces.load(shared_data / "alibaba-gpu-2025-dlrm" / "disaggregated_DLRM_trace.csv")
    roles = dict(dlrm.group_by("category").len().iter_rows())
    assert roles == {"CN": 16_485, "HN": 7_386}  # the README's counts
    assert dlrm["tenant"].n_unique() == 156
    assert dlrm["created_s"][0] is None  # existed before the trace started
    spot = traces.load(shared_data / "alibaba-spot-gpu-2026" / "node_info_df.csv")
    assert spot.height == 4_278 and spot["gpu_model"].n_unique() == 6
    assert spot["memory_gb"].null_count() == spot.height
