"""``pull``: fetch a catalog dataset into the local cache, verify it, convert it to Parquet.

Files come from ``FLEETLAB_MIRROR=DIR`` (a folder laid out like the public mirror,
``DIR/NAME/<path>``) when it is set, else from each file's official URL over HTTPS.
Every file is written beside its final name and renamed into place only once its
sha256 matches the catalog, so the cache never holds a half-written or unverified
file; files already present and verified are not fetched again.

Cache layout (``$FLEETLAB_HOME/datasets/NAME/``)::

    raw/<path>                      the files, exactly as the catalog lists them
    canonical/<path stem>.parquet   canonical tables of the convertible files
    downloads/<archive>             archives that members are extracted from
"""

from __future__ import annotations

import gzip
import hashlib
import os
import secrets
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from fleetlab.errors import DataNotFoundError, FleetlabError, InputFormatError
from fleetlab.traces._api import convert, formats
from fleetlab.traces._catalog import Dataset, DatasetFile, dataset, tar_manifest, tar_members

PullStage = Literal["fetch", "convert"]
_CHUNK = 1 << 20
_SUFFIXES = (".gz", ".csv", ".jsonl", ".json", ".txt", ".tar", ".tgz", ".parquet")


class PullProgress(Protocol):
    """Receives progress while a dataset is pulled (the CLI draws a rich bar with it).

    ``stage`` is ``"fetch"`` (units: bytes, ``total`` = the dataset's bytes; files
    already present advance it by their size) or ``"convert"`` (units: files,
    ``total`` = files to convert); ``advance`` counts the units done since the last call.
    """

    def __call__(self, stage: PullStage, path: str, advance: int, total: int) -> None:
        """Report ``advance`` more units of ``stage`` done while handling ``path``."""


class PullResult(BaseModel):
    """What :func:`pull_dataset` did.

    Attributes
    ----------
    dataset
        The dataset's name.
    source
        ``"mirror <DIR>"`` or ``"network"``.
    root
        The dataset's cache folder.
    raw
        Every file's path (relative to the dataset) -> its local raw file.
    canonical
        Convertible file path -> canonical Parquet file.
    fetched, reused
        Files copied/downloaded now, and files already present and verified.
    left_raw
        Convertible files left unconverted -> why (no reader yet, or the reader's error).
    bytes_fetched
        Bytes copied or downloaded now.
    """

    model_config = ConfigDict(frozen=True)

    dataset: str
    source: str
    root: Path
    raw: dict[str, Path]
    canonical: dict[str, Path]
    fetched: list[str]
    reused: list[str]
    left_raw: dict[str, str]
    bytes_fetched: int


# -- locations ---------------------------------------------------------------------------
def datasets_home() -> Path:
    """The dataset cache folder: ``$FLEETLAB_HOME/datasets`` (default XDG data dir).

    Returns
    -------
    pathlib.Path
        ``$FLEETLAB_HOME/datasets``, else ``$XDG_DATA_HOME/fleetlab/datasets``, else
        ``~/.local/share/fleetlab/datasets``.
    """
    explicit = os.environ.get("FLEETLAB_HOME")
    if explicit:
        return Path(explicit).expanduser() / "datasets"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "fleetlab" / "datasets"


def mirror_dir() -> Path | None:
    """The mirror folder named by ``FLEETLAB_MIRROR``, or ``None`` when unset."""
    value = os.environ.get("FLEETLAB_MIRROR")
    return Path(value).expanduser() if value else None


def canonical_name(path: str) -> str:
    """The canonical Parquet path for a raw file path: known suffixes stripped, ``.parquet`` added.

    Only the last path component is shortened, and never to nothing
    (``"x/trace.csv.gz"`` -> ``"x/trace.parquet"``, ``".gz"`` -> ``".gz.parquet"``).
    """
    head, _, name = path.rpartition("/")
    stem = name
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if stem.endswith(suffix) and len(stem) > len(suffix):
                stem = stem[: -len(suffix)]
                changed = True
    return f"{head}/{stem}.parquet" if head else f"{stem}.parquet"


# -- hashing and atomic files ----------------------------------------------------------------
def _sha256(path: Path, *, gunzip: bool = False) -> str:
    digest = hashlib.sha256()
    opener: Any = gzip.open if gunzip else open
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verified(path: Path, entry: DatasetFile) -> bool:
    """True if ``path`` holds ``entry``: same sha256, or (gzip files) same decompressed content."""
    try:
        if not path.is_file():
            return False
        if path.stat().st_size == entry.size and _sha256(path) == entry.sha256:
            return True
        if entry.encoding == "gzip":
            return _sha256(path, gunzip=True) == entry.content_sha256
        if entry.encoding == "tar.gz":
            found = tar_members(path)
            return tar_manifest([(n, h) for n, h, _ in found]) == entry.content_sha256
    except (OSError, EOFError, gzip.BadGzipFile, tarfile.TarError):
        return False
    return False


@contextmanager
def _temp_beside(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part-{secrets.token_hex(4)}")
    try:
        yield tmp
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()


def _mismatch(path: Path, what: str, expected: str, found: str) -> InputFormatError:
    return InputFormatError(
        path,
        f"{what} does not match the catalog; the file was removed",
        field="sha256",
        expected=expected,
        found=found,
    )


# -- fetching --------------------------------------------------------------------------------
def _copy_from_mirror(src: Path, target: Path, entry: DatasetFile, report: Any) -> None:
    if not src.is_file():
        raise DataNotFoundError(
            f"{src}: not in the mirror (FLEETLAB_MIRROR={src.parents[len(Path(entry.path).parts)]})"
        )
    digest = hashlib.sha256()
    with _temp_beside(target) as tmp:
        with src.open("rb") as fin, tmp.open("wb") as fout:
            while chunk := fin.read(_CHUNK):
                fout.write(chunk)
                digest.update(chunk)
                report(len(chunk))
        found = digest.hexdigest()
        if found != entry.sha256:
            raise _mismatch(src, "mirror file", entry.sha256, found)
        os.replace(tmp, target)


def _download(client: Any, url: str, dest: Path, report: Any) -> str:
    """Stream ``url`` into ``dest``; returns the sha256 of the bytes."""
    import httpx

    digest = hashlib.sha256()
    try:
        with client.stream("GET", url) as resp:
            if resp.status_code >= 400:
                raise DataNotFoundError(f"{url}: download failed with HTTP {resp.status_code}")
            with dest.open("wb") as f:
                for chunk in resp.iter_bytes(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    report(len(chunk))
    except httpx.HTTPError as exc:
        raise DataNotFoundError(
            f"{url}: cannot download ({type(exc).__name__}: {exc}). Without network, set "
            "FLEETLAB_MIRROR=DIR to copy from a local mirror laid out like ../shared/data"
        ) from exc
    return digest.hexdigest()


def _gzip_into(src: Path, dest: Path) -> None:
    with (
        src.open("rb") as fin,
        dest.open("wb") as raw_out,
        gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw_out, mtime=0) as gz,
    ):
        shutil.copyfileobj(fin, gz, _CHUNK)


def _fetch_archive(client: Any, entry: DatasetFile, downloads: Path, report: Any) -> Path:
    assert entry.url is not None
    archive = downloads / entry.url.rstrip("/").rsplit("/", 1)[-1]
    if archive.is_file() and (entry.url_sha256 is None or _sha256(archive) == entry.url_sha256):
        return archive
    with _temp_beside(archive) as tmp:
        found = _download(client, entry.url, tmp, report)
        if entry.url_sha256 and found != entry.url_sha256:
            raise _mismatch(archive, f"download of {entry.url}", entry.url_sha256, found)
        os.replace(tmp, archive)
    return archive


def _fetch_members(client: Any, entry: DatasetFile, target: Path, report: Any) -> None:
    """Download every member of a ``tar.gz`` entry, verify each, pack them like the mirror."""
    with _temp_beside(target) as packed, _temp_beside(target.with_name(target.name + ".m")) as one:
        with (
            packed.open("wb") as raw_out,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw_out, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for member in sorted(entry.members, key=lambda m: m.name):
                found = _download(client, member.url, one, report)
                if found != member.sha256:
                    raise _mismatch(target, f"download of {member.url}", member.sha256, found)
                info = tarfile.TarInfo(member.name)
                info.size, info.mtime, info.mode = one.stat().st_size, 0, 0o644
                with one.open("rb") as f:
                    tar.addfile(info, f)
        os.replace(packed, target)


def _fetch_from_network(
    client: Any, entry: DatasetFile, target: Path, downloads: Path, report: Any
) -> None:
    if entry.encoding == "tar.gz":
        _fetch_members(client, entry, target, report)
        return
    with _temp_beside(target) as content, _temp_beside(target.with_suffix(".gz-tmp")) as packed:
        if entry.member:
            archive = _fetch_archive(client, entry, downloads, report)
            try:
                with (
                    zipfile.ZipFile(archive) as zf,
                    zf.open(entry.member) as fin,
                    content.open("wb") as fout,
                ):
                    shutil.copyfileobj(fin, fout, _CHUNK)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise InputFormatError(
                    archive, f"cannot extract {entry.member!r}: {exc}", field="member"
                ) from exc
            found = _sha256(content)
            expected = entry.content_sha256
        else:
            found = _download(client, entry.url or "", content, report)
            expected = entry.url_sha256 or entry.content_sha256
        if found != expected:
            raise _mismatch(target, f"download of {entry.url}", expected, found)
        if entry.encoding == "gzip":
            _gzip_into(content, packed)
            os.replace(packed, target)
        else:
            os.replace(content, target)


def _not_downloadable(ds: Dataset, missing: list[DatasetFile]) -> DataNotFoundError:
    lines = "\n".join(f"  {f.path}: {f.source}" for f in missing[:5])
    more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
    return DataNotFoundError(
        f"dataset {ds.name!r}: {len(missing)} file(s) have no official per-file download "
        f"(the mirror re-packed them):\n{lines}{more}\n"
        "Set FLEETLAB_MIRROR=DIR to a folder laid out like ../shared/data to copy them."
    )


def _resolve(name: str | Dataset) -> Dataset:
    return name if isinstance(name, Dataset) else dataset(name)


def _http_client() -> Any:
    import httpx

    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(30.0, read=120.0),
        headers={"User-Agent": "fleetlab-data-pull"},
    )


def _ensure_files(
    ds: Dataset,
    entries: list[DatasetFile],
    raw_root: Path,
    *,
    force: bool,
    mirror: Path | None,
    client: Any,
    progress: PullProgress | None,
) -> tuple[list[str], list[str], int]:
    total = sum(e.size for e in entries)
    fetched: list[str] = []
    reused: list[str] = []
    moved = 0
    todo: list[DatasetFile] = []
    for entry in entries:
        target = raw_root / entry.path
        if not force and verified(target, entry):
            reused.append(entry.path)
            if progress:
                progress("fetch", entry.path, entry.size, total)
        else:
            if not force:  # an unverified leftover is never kept; a verified one is
                with suppress(FileNotFoundError):  # replaced only once the new copy verifies
                    target.unlink()
            todo.append(entry)
    if mirror is None:
        missing = [e for e in todo if not e.downloadable]
        if missing:
            raise _not_downloadable(ds, missing)
    own_client = client is None and mirror is None and bool(todo)
    http = _http_client() if own_client else client
    try:
        for entry in todo:
            target = raw_root / entry.path
            done = 0

            def report(n: int, entry: DatasetFile = entry) -> None:
                nonlocal done, moved
                moved += n  # bytes really transferred
                step = max(0, min(n, entry.size - done))  # the bar counts catalog bytes
                done += step
                if progress and step:
                    progress("fetch", entry.path, step, total)

            if mirror is not None:
                _copy_from_mirror(mirror / ds.name / entry.path, target, entry, report)
            else:
                _fetch_from_network(http, entry, target, raw_root.parent / "downloads", report)
                if not verified(target, entry):
                    found = _sha256(target)
                    target.unlink(missing_ok=True)
                    raise _mismatch(target, "downloaded file", entry.sha256, found)
            if progress and done < entry.size:
                progress("fetch", entry.path, entry.size - done, total)
            fetched.append(entry.path)
    finally:
        if own_client:
            http.close()
    return fetched, reused, moved


def pull_dataset(
    name: str | Dataset,
    *,
    force: bool = False,
    progress: PullProgress | None = None,
    mirror: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    client: Any = None,
) -> PullResult:
    """Fetch, verify and convert a dataset; the full account of what happened.

    Parameters
    ----------
    name
        A catalog name (see :func:`datasets`) or a :class:`Dataset` you built.
    force
        Fetch and convert every file again, even if present and verified.
    progress
        Called as files are fetched and converted (see :class:`PullProgress`).
    mirror
        Folder laid out like the public mirror (``DIR/NAME/<path>``); default
        ``$FLEETLAB_MIRROR``. When set, files are copied from it, never downloaded.
    cache
        Dataset cache folder; default :func:`datasets_home`.
    client
        An ``httpx.Client`` to download with (default: a new one).

    Returns
    -------
    PullResult
        Local raw files, canonical Parquet files, and the files left unconverted
        with the reason (no reader for their format yet, or the reader's error).

    Raises
    ------
    DataNotFoundError
        Unknown dataset (the message lists the known ones), a file missing from the
        mirror, a download that failed, or files only a mirror can provide.
    InputFormatError
        A fetched file's sha256 differs from the catalog (the file is removed).
    """
    ds = _resolve(name)
    mirror_path = Path(mirror).expanduser() if mirror is not None else mirror_dir()
    if mirror_path is not None and not mirror_path.is_dir():
        raise DataNotFoundError(f"{mirror_path}: mirror folder (FLEETLAB_MIRROR) does not exist")
    root = (Path(cache).expanduser() if cache is not None else datasets_home()) / ds.name
    raw_root = root / "raw"
    fetched, reused, moved = _ensure_files(
        ds,
        list(ds.files),
        raw_root,
        force=force,
        mirror=mirror_path,
        client=client,
        progress=progress,
    )
    known = {f.name for f in formats()}
    convertible = [f for f in ds.files if f.format]
    canonical: dict[str, Path] = {}
    left_raw: dict[str, str] = {}
    for entry in convertible:
        if progress:
            progress("convert", entry.path, 0, len(convertible))
        fmt = entry.format or ""
        if fmt not in known:
            left_raw[entry.path] = f"no reader for format {fmt!r} yet"
        else:
            src = raw_root / entry.path
            out = root / "canonical" / canonical_name(entry.path)
            fresh = out.is_file() and out.stat().st_mtime_ns >= src.stat().st_mtime_ns
            if force or not fresh:
                try:
                    convert(src, out, format=fmt, overwrite=True)
                except FleetlabError as exc:
                    left_raw[entry.path] = f"conversion failed: {exc}"
                except Exception as exc:  # a reader bug must not lose the rest of the pull
                    left_raw[entry.path] = f"conversion failed ({type(exc).__name__}): {exc}"
            if entry.path not in left_raw:
                canonical[entry.path] = out
        if progress:
            progress("convert", entry.path, 1, len(convertible))
    return PullResult(
        dataset=ds.name,
        source=f"mirror {mirror_path}" if mirror_path is not None else "network",
        root=root,
        raw={f.path: raw_root / f.path for f in ds.files},
        canonical=canonical,
        fetched=fetched,
        reused=reused,
        left_raw=left_raw,
        bytes_fetched=moved,
    )


def pull(
    name: str | Dataset,
    *,
    force: bool = False,
    progress: PullProgress | None = None,
) -> dict[str, Path]:
    """Fetch a dataset into the cache, verify its sha256s, convert it to canonical Parquet.

    Uses ``$FLEETLAB_MIRROR`` when set, else the official URLs; see
    :func:`pull_dataset` for the options and the full account.

    Returns
    -------
    dict of str to pathlib.Path
        Path of each converted file (relative to the dataset) -> its canonical
        Parquet file in ``$FLEETLAB_HOME/datasets/NAME/canonical/``.

    Raises
    ------
    DataNotFoundError, InputFormatError
        As :func:`pull_dataset`.
    """
    return pull_dataset(name, force=force, progress=progress).canonical


def dataset_file(
    name: str | Dataset,
    path: str = "",
    *,
    mirror: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> Path:
    """The local path of a dataset's raw file (or folder), fetching it if needed.

    With ``FLEETLAB_MIRROR`` set the file is verified in the mirror and its mirror
    path returned (nothing is copied); otherwise it is taken from the cache, or
    downloaded into it and verified.

    Parameters
    ----------
    name
        Catalog name or :class:`Dataset`.
    path
        A file's path in the dataset (``"AzureLLMInferenceTrace_conv.csv"``), or a
        folder prefix (``"rca_data/2023-01-29/trace"``; ``""`` = the whole dataset),
        in which case every file below it is made present and the folder returned.

    Returns
    -------
    pathlib.Path
        The file or folder.

    Raises
    ------
    DataNotFoundError
        Unknown dataset or path, or the file cannot be fetched.
    InputFormatError
        The file does not match the catalog's sha256.
    """
    ds = _resolve(name)
    wanted = path.strip("/")
    exact = [f for f in ds.files if f.path == wanted]
    entries = exact or [f for f in ds.files if not wanted or f.path.startswith(wanted + "/")]
    if not entries:
        ds.file(wanted)  # raises with a listing
    mirror_path = Path(mirror).expanduser() if mirror is not None else mirror_dir()
    if mirror_path is not None and (mirror_path / ds.name).is_dir():
        base = mirror_path / ds.name
        for entry in entries:
            src = base / entry.path
            if not src.is_file():
                raise DataNotFoundError(f"{src}: not in the mirror (FLEETLAB_MIRROR={mirror_path})")
            if not verified(src, entry):
                raise _mismatch(src, "mirror file", entry.sha256, _sha256(src))
        return base / wanted if wanted else base
    root = (Path(cache).expanduser() if cache is not None else datasets_home()) / ds.name
    _ensure_files(ds, entries, root / "raw", force=False, mirror=None, client=None, progress=None)
    return root / "raw" / wanted if wanted else root / "raw"
