"""The dataset catalog matches the real mirror byte for byte, and its formats exist."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from fleetlab import traces
from fleetlab.errors import DataNotFoundError
from fleetlab.traces._catalog import tar_manifest, tar_members


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_one_entry_per_mirror_folder(shared_data: Path) -> None:
    folders = sorted(p.name for p in shared_data.iterdir() if p.is_dir())
    assert [d.name for d in traces.datasets()] == folders
    assert len(folders) == 19


def test_every_mirror_file_is_listed_with_its_sha256_and_size(shared_data: Path) -> None:
    for ds in traces.datasets():
        on_disk = {
            p.relative_to(shared_data / ds.name).as_posix()
            for p in (shared_data / ds.name).rglob("*")
            if p.is_file()
        }
        on_disk.discard("SOURCES.md")  # the mirror curator's notes, not upstream data
        listed = [f.path for f in ds.files]
        assert len(listed) == len(set(listed)), ds.name
        assert set(listed) == on_disk, ds.name
        for f in ds.files:
            data = (shared_data / ds.name / f.path).read_bytes()
            assert len(data) == f.size, f.path
            assert _sha(data) == f.sha256, f.path
            if f.encoding == "tar.gz":
                if f.path != "language_m-small.tar.gz":  # members re-derived for the smallest
                    continue  # (the others' bytes are pinned by sha256 above)
                members = tar_members(shared_data / ds.name / f.path)
                assert [(m.name, m.sha256, m.size) for m in f.members] == sorted(members)
                assert tar_manifest([(n, h) for n, h, _ in members]) == f.content_sha256
                continue
            content = gzip.decompress(data) if f.encoding == "gzip" else data
            assert _sha(content) == f.content_sha256, f.path
            if f.url and not f.member:
                assert f.url_sha256 == f.content_sha256


def test_published_counts(shared_data: Path) -> None:
    nezha = traces.dataset("nezha-rca")
    assert sum(f.path.endswith("_trace.csv.gz") for f in nezha.files) == 153  # SOURCES.md
    tw = traces.dataset("traceweaver-deathstarbench")
    assert sum(f.path.endswith(".jsonl.gz") for f in tw.files) == 21
    assert sum(f.size for f in tw.files if f.path.endswith(".jsonl.gz")) == 8_762_845
    zipkin = traces.dataset("zipkin-lens-testdata")
    assert sum(f.path.endswith(".json") for f in zipkin.files) == 10
    assert 150e6 < sum(d.size for d in traces.datasets()) < 170e6  # "total ~158 MB"


def test_format_names_exist_in_the_readers() -> None:
    known = {f.name for f in traces.formats()}
    used = {f.format for d in traces.datasets() for f in d.files if f.format}
    assert used, "no convertible file at all"
    assert used <= known, used - known


def test_formats_are_what_detection_finds(shared_data: Path) -> None:
    for ds in traces.datasets():
        for f in ds.files:
            if f.format:
                assert traces.detect(shared_data / ds.name / f.path).name == f.format, f.path


def test_urls_are_official_and_pinned() -> None:
    pinned = re.compile(r"^https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/\S+$")
    for ds in traces.datasets():
        assert ds.license and ds.citation and ds.title and ds.description
        assert ds.urls and all(u.startswith("https://") for u in ds.urls)
        for f in ds.files:
            if f.url is None:
                assert "mirror" in f.source or "converted" in f.source, f.path
                assert f.downloadable == bool(f.members)
                continue
            assert f.url.startswith("https://")
            if "githubusercontent" in f.url:
                assert pinned.match(f.url), f.url
            if f.member:
                assert f.url.endswith(".whl") and f.url_sha256
        for m in (m for f in ds.files for m in f.members):
            assert pinned.match(m.url) and m.url.endswith(m.name), m.url
    spar = traces.dataset("alibaba-2018-batch-spar-sample").files[0]
    assert spar.url_sha256 == "7a55aa9bce742f678b1fd7071f5d354e718c37396480a329cfc018d1ed66e174"
    llm = traces.dataset("azure-llm-inference-2023").file("AzureLLMInferenceTrace_conv.csv")
    assert llm.url == (
        "https://raw.githubusercontent.com/Azure/AzurePublicDataset/"
        "b469a113cedca53ddc3bdea71a143dc4b7d8700c/data/AzureLLMInferenceTrace_conv.csv"
    )


def test_alibaba_2017_upstream_hash_matches_its_sources_md() -> None:
    f = traces.dataset("alibaba-2017-batch-task").file("batch_task.csv.gz")
    assert f.encoding == "gzip"
    assert f.content_sha256 == "7586e51ef58390b41d67de4263018296d4b0437b414625f97085f9040c727cce"


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(DataNotFoundError) as info:
        traces.dataset("no-such-data")
    text = str(info.value)
    assert "no-such-data" in text
    assert all(d.name in text for d in traces.datasets())


def test_unknown_file_and_frozen_entries() -> None:
    ds = traces.dataset("azure-llm-inference-2023")
    with pytest.raises(DataNotFoundError, match="has no file"):
        ds.file("nope.csv")
    with pytest.raises(ValidationError):
        ds.name = "x"  # type: ignore[misc]
    assert ds.formats == ("azure-llm",)
    assert ds.size == sum(f.size for f in ds.files)


def test_docs_list_the_catalog_and_pull_names() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "data.md"
    line = next(x for x in docs.read_text().splitlines() if x.startswith("Public names"))
    names = set(re.findall(r"`([A-Za-z_]+)`", line.split(":", 1)[1]))
    assert names <= set(traces.__all__)
    assert {"datasets", "dataset", "pull", "dataset_file"} <= names
