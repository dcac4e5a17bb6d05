"""``pull`` and ``dataset_file``: mirror copies, downloads (local server / mock), verification."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab import traces
from fleetlab.errors import DataNotFoundError, InputFormatError
from fleetlab.traces import Dataset, DatasetFile
from fleetlab.traces._pull import canonical_name

LLM = "azure-llm-inference-2023"
CSV = b"TIMESTAMP,ContextTokens,GeneratedTokens\n"
CSV += b"2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"
CSV += b"2023-11-16 18:15:51.2500000,879,28\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def mirror(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEETLAB_MIRROR", str(shared_data))
    return shared_data


@pytest.fixture
def no_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETLAB_MIRROR", raising=False)


# -- from the real mirror -------------------------------------------------------------------
def test_pull_from_mirror_converts_the_real_trace(mirror: Path, tmp_path: Path) -> None:
    result = traces.pull_dataset(LLM)
    assert result.source == f"mirror {mirror}"
    assert result.root == traces.datasets_home() / LLM
    assert sorted(result.fetched) == [
        "AzureLLMInferenceTrace_code.csv",
        "AzureLLMInferenceTrace_conv.csv",
    ]
    for rel, raw in result.raw.items():
        assert raw.read_bytes() == (mirror / LLM / rel).read_bytes()
    code = result.canonical["AzureLLMInferenceTrace_code.csv"]
    conv = result.canonical["AzureLLMInferenceTrace_conv.csv"]
    assert code == result.root / "canonical" / "AzureLLMInferenceTrace_code.parquet"
    assert pl.read_parquet(code).height == 8_819  # published row counts (SOURCES.md)
    assert pl.read_parquet(conv).height == 19_366
    assert traces.detect(conv).table == "requests"
    assert result.bytes_fetched == traces.dataset(LLM).size
    assert not list(result.root.rglob(".*part-*"))


def test_second_pull_reuses_verified_files_and_force_refetches(mirror: Path) -> None:
    first = traces.pull(LLM)
    stamp = {k: v.stat().st_mtime_ns for k, v in first.items()}
    again = traces.pull_dataset(LLM)
    assert again.fetched == [] and len(again.reused) == 2 and again.bytes_fetched == 0
    assert {k: v.stat().st_mtime_ns for k, v in again.canonical.items()} == stamp  # not reconverted
    forced = traces.pull_dataset(LLM, force=True)
    assert len(forced.fetched) == 2 and forced.reused == []


def test_a_damaged_cached_file_is_fetched_again(mirror: Path) -> None:
    result = traces.pull_dataset(LLM)
    damaged = result.raw["AzureLLMInferenceTrace_code.csv"]
    damaged.write_bytes(damaged.read_bytes()[:-10])
    again = traces.pull_dataset(LLM)
    assert again.fetched == ["AzureLLMInferenceTrace_code.csv"]
    assert _sha(damaged.read_bytes()) == traces.dataset(LLM).files[0].sha256


def test_corrupt_mirror_file_is_refused_and_nothing_kept(shared_data: Path, tmp_path: Path) -> None:
    fake = tmp_path / "mirror"
    shutil.copytree(shared_data / LLM, fake / LLM)
    path = fake / LLM / "AzureLLMInferenceTrace_conv.csv"
    path.write_bytes(path.read_bytes().replace(b",", b";", 1))
    with pytest.raises(InputFormatError, match="sha256") as info:
        traces.pull_dataset(LLM, mirror=fake, cache=tmp_path / "cache")
    assert "AzureLLMInferenceTrace_conv.csv" in str(info.value)
    raw = tmp_path / "cache" / LLM / "raw"
    assert not (raw / "AzureLLMInferenceTrace_conv.csv").exists()
    assert [p.name for p in raw.iterdir() if p.name.startswith(".")] == []


def test_file_missing_from_mirror(tmp_path: Path) -> None:
    (tmp_path / "mirror" / LLM).mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="not in the mirror"):
        traces.pull_dataset(LLM, mirror=tmp_path / "mirror", cache=tmp_path / "c")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        traces.pull_dataset(LLM, mirror=tmp_path / "nowhere")


def test_unknown_dataset_lists_known(mirror: Path) -> None:
    with pytest.raises(DataNotFoundError, match="Known datasets") as info:
        traces.pull("azure-llm-2099")
    assert LLM in str(info.value)


def test_progress_reports_every_byte_and_file(mirror: Path) -> None:
    events: list[tuple[str, str, int, int]] = []
    traces.pull(LLM, progress=lambda *e: events.append(e))
    size = traces.dataset(LLM).size
    fetch = [e for e in events if e[0] == "fetch"]
    assert sum(e[2] for e in fetch) == size and {e[3] for e in fetch} == {size}
    convert = [e for e in events if e[0] == "convert"]
    assert sum(e[2] for e in convert) == 2 and {e[3] for e in convert} == {2}


def test_dataset_file_from_mirror_is_verified_in_place(mirror: Path) -> None:
    path = traces.dataset_file(LLM, "AzureLLMInferenceTrace_conv.csv")
    assert path == mirror / LLM / "AzureLLMInferenceTrace_conv.csv"
    folder = traces.dataset_file("nezha-rca", "rca_data/2022-08-22/trace")
    assert folder == mirror / "nezha-rca" / "rca_data/2022-08-22/trace"
    assert len(list(folder.glob("*.csv.gz"))) == 12
    with pytest.raises(DataNotFoundError, match="has no file"):
        traces.dataset_file(LLM, "nope.csv")


# -- over the network: a fixture dataset served locally ---------------------------------------
def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _wheel(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(member, data)
        zf.writestr("other/file.txt", b"unrelated")
    return buf.getvalue()


def _fixture(base: str) -> tuple[Dataset, dict[str, bytes]]:
    """A 3-file dataset: a plain CSV, a gzip'd copy of upstream bytes, a member of a wheel."""
    member_data = b"1,2,3\n4,5,6\n"
    wheel = _wheel("pkg/data/sample.csv", member_data)
    served = {"/repo/trace.csv": CSV, "/repo/upstream.csv": CSV, "/pkg.whl": wheel}
    files = (
        DatasetFile(
            path="trace.csv",
            size=len(CSV),
            sha256=_sha(CSV),
            format="azure-llm",
            url=f"{base}/repo/trace.csv",
            url_sha256=_sha(CSV),
            content_sha256=_sha(CSV),
            source="fixture",
        ),
        DatasetFile(
            path="sub/trace.csv.gz",
            size=len(_gz(CSV)),
            sha256=_sha(_gz(CSV)),
            format="azure-llm",
            url=f"{base}/repo/upstream.csv",
            encoding="gzip",
            url_sha256=_sha(CSV),
            content_sha256=_sha(CSV),
            source="fixture (gzip'd)",
        ),
        DatasetFile(
            path="sample.csv.gz",
            size=len(_gz(member_data)),
            sha256=_sha(_gz(member_data)),
            format=None,
            url=f"{base}/pkg.whl",
            member="pkg/data/sample.csv",
            encoding="gzip",
            url_sha256=_sha(wheel),
            content_sha256=_sha(member_data),
            source="fixture wheel",
        ),
    )
    ds = Dataset(
        name="fixture-set",
        title="t",
        description="d",
        license="MIT",
        homepage=base,
        urls=(base,),
        citation="c",
        files=files,
    )
    return ds, served


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def _serve(root: Path, served: dict[str, bytes]) -> None:
    for url_path, data in served.items():
        target = root / url_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def test_download_from_a_local_http_server(no_mirror: None, server: tuple[str, Path]) -> None:
    base, root = server
    ds, served = _fixture(base)
    _serve(root, served)
    result = traces.pull_dataset(ds)
    assert result.source == "network"
    assert sorted(result.fetched) == sorted(f.path for f in ds.files)
    assert result.raw["trace.csv"].read_bytes() == CSV
    assert gzip.decompress(result.raw["sub/trace.csv.gz"].read_bytes()) == CSV
    assert gzip.decompress(result.raw["sample.csv.gz"].read_bytes()) == b"1,2,3\n4,5,6\n"
    assert (result.root / "downloads" / "pkg.whl").is_file()  # archive kept for other members
    assert set(result.canonical) == {"trace.csv", "sub/trace.csv.gz"}
    assert pl.read_parquet(result.canonical["sub/trace.csv.gz"])["prompt_tokens"].to_list() == [
        374,
        396,
        879,
    ]
    assert result.canonical["sub/trace.csv.gz"] == result.root / "canonical/sub/trace.parquet"
    # served files gone: everything is verified from the cache, nothing fetched
    shutil.rmtree(root)
    root.mkdir()
    again = traces.pull_dataset(ds)
    assert again.fetched == [] and len(again.reused) == 3
    assert traces.dataset_file(ds, "sub/trace.csv.gz") == result.raw["sub/trace.csv.gz"]


def test_dataset_file_downloads_only_what_is_asked(
    no_mirror: None, server: tuple[str, Path]
) -> None:
    base, root = server
    ds, served = _fixture(base)
    _serve(root, served)
    path = traces.dataset_file(ds, "trace.csv")
    assert path.read_bytes() == CSV
    assert not (path.parent / "sub").exists()
    folder = traces.dataset_file(ds, "sub")
    assert folder.is_dir() and (folder / "trace.csv.gz").is_file()


def _mock(served: dict[str, bytes], *, status: int = 200) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        data = served.get(request.url.path)
        if data is None or status != 200:
            return httpx.Response(404 if data is None else status)
        return httpx.Response(200, content=data)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_checksum_mismatch_on_download_removes_the_file(no_mirror: None, tmp_path: Path) -> None:
    ds, served = _fixture("https://example.invalid")
    served["/repo/upstream.csv"] = CSV.replace(b"879", b"878")
    with pytest.raises(InputFormatError, match="sha256") as info:
        traces.pull_dataset(ds, cache=tmp_path, client=_mock(served))
    assert "expected " + _sha(CSV) in str(info.value)
    raw = tmp_path / "fixture-set" / "raw"
    assert not (raw / "sub" / "trace.csv.gz").exists()
    assert not [p for p in raw.rglob("*") if p.name.startswith(".")]


def test_http_errors_are_clear(no_mirror: None, tmp_path: Path) -> None:
    ds, served = _fixture("https://example.invalid")
    with pytest.raises(DataNotFoundError, match="HTTP 503"):
        traces.pull_dataset(ds, cache=tmp_path, client=_mock(served, status=503))

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("network unreachable", request=request)

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    with pytest.raises(DataNotFoundError, match="FLEETLAB_MIRROR"):
        traces.pull_dataset(ds, cache=tmp_path, client=client)


def test_mirror_only_files_need_a_mirror(no_mirror: None) -> None:
    with pytest.raises(DataNotFoundError, match="FLEETLAB_MIRROR") as info:
        traces.pull("traceweaver-deathstarbench")
    assert "hotel_reservation/hotel_load25.jsonl.gz" in str(info.value)


def test_files_without_a_reader_are_left_raw_and_said_so(no_mirror: None, tmp_path: Path) -> None:
    ds, served = _fixture("https://example.invalid")
    odd = ds.files[0].model_copy(update={"format": "format-from-the-future"})
    ds = ds.model_copy(update={"files": (odd,)})
    result = traces.pull_dataset(ds, cache=tmp_path, client=_mock(served))
    assert result.canonical == {}
    assert result.left_raw == {"trace.csv": "no reader for format 'format-from-the-future' yet"}


def test_a_reader_error_leaves_the_file_raw_with_the_message(
    no_mirror: None, tmp_path: Path
) -> None:
    ds, served = _fixture("https://example.invalid")
    bad = b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,abc,44\n"
    entry = ds.files[0].model_copy(
        update={
            "size": len(bad),
            "sha256": _sha(bad),
            "url_sha256": _sha(bad),
            "content_sha256": _sha(bad),
        }
    )
    served["/repo/trace.csv"] = bad
    result = traces.pull_dataset(
        ds.model_copy(update={"files": (entry,)}), cache=tmp_path, client=_mock(served)
    )
    assert result.canonical == {}
    assert result.left_raw["trace.csv"].startswith("conversion failed")


@pytest.mark.parametrize(
    ("raw", "parquet"),
    [
        ("a.csv", "a.parquet"),
        ("x/b.csv.gz", "x/b.parquet"),
        ("t.jsonl", "t.parquet"),
        ("m.tar.gz", "m.parquet"),
        ("f.json.txt", "f.parquet"),
        ("odd", "odd.parquet"),
        (".gz", ".gz.parquet"),
    ],
)
def test_canonical_names(raw: str, parquet: str) -> None:
    assert canonical_name(raw) == parquet


@given(
    st.lists(
        st.sampled_from(["a", "b", "x.y", ".gz", ".csv", ".json", "-", "_"]), min_size=1, max_size=6
    )
)
def test_canonical_name_property(parts: list[str]) -> None:
    raw = "dir/" + "".join(parts)
    out = canonical_name(raw)
    assert out.startswith("dir/") and out.endswith(".parquet")
    stem = out.removesuffix(".parquet")
    assert raw.startswith(stem) and len(stem) > len("dir/")


@settings(max_examples=30, deadline=None)
@given(pos=st.integers(0, len(CSV) - 1), delta=st.integers(1, 255))
def test_any_changed_byte_fails_verification(pos: int, delta: int) -> None:
    import tempfile

    from fleetlab.traces._pull import verified

    ds, _ = _fixture("https://example.invalid")
    plain, packed = ds.files[0], ds.files[1]
    bad = bytearray(CSV)
    bad[pos] = (bad[pos] + delta) % 256
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "f"
        p.write_bytes(CSV)
        assert verified(p, plain)
        p.write_bytes(bytes(bad))
        assert not verified(p, plain)
        p.write_bytes(gzip.compress(CSV, compresslevel=1))  # another compressor: same content
        assert verified(p, packed)
        p.write_bytes(gzip.compress(bytes(bad)))
        assert not verified(p, packed)


def test_tar_bundle_is_downloaded_member_by_member(no_mirror: None, tmp_path: Path) -> None:
    import tarfile

    from fleetlab.traces import ArchiveMember
    from fleetlab.traces._catalog import tar_manifest

    parts = {"data/m/chunk-1-trace.csv": b"a,b\n1,2\n", "data/m/chunk-1-dataset.json": b"{}"}
    served = {f"/repo/{name}": data for name, data in parts.items()}
    members = tuple(
        ArchiveMember(name=n, size=len(d), sha256=_sha(d), url=f"https://example.invalid/repo/{n}")
        for n, d in sorted(parts.items())
    )
    manifest = tar_manifest([(n, _sha(d)) for n, d in parts.items()])
    # the mirror's own tar of the same files: other headers, other order, other compressor
    mirror_tar = tmp_path / "mirror.tar.gz"
    with tarfile.open(mirror_tar, "w:gz") as tar:
        for n, d in reversed(list(parts.items())):
            info = tarfile.TarInfo(n)
            info.size, info.mtime = len(d), 1_700_000_000
            tar.addfile(info, io.BytesIO(d))
    blob = mirror_tar.read_bytes()
    entry = DatasetFile(
        path="m.tar.gz",
        size=len(blob),
        sha256=_sha(blob),
        encoding="tar.gz",
        content_sha256=manifest,
        members=members,
        source="packed by the mirror",
    )
    ds = Dataset(
        name="bundle",
        title="t",
        description="d",
        license="MIT",
        homepage="-",
        urls=("-",),
        citation="c",
        files=(entry,),
    )
    result = traces.pull_dataset(ds, cache=tmp_path / "cache", client=_mock(served))
    assert result.fetched == ["m.tar.gz"]
    with tarfile.open(result.raw["m.tar.gz"]) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    assert got == parts
    from fleetlab.traces._pull import verified

    assert verified(mirror_tar, entry)  # both packings verify by their members
    served["/repo/data/m/chunk-1-trace.csv"] = b"a,b\n1,3\n"
    with pytest.raises(InputFormatError, match="sha256"):
        traces.pull_dataset(ds, cache=tmp_path / "c2", client=_mock(served))
