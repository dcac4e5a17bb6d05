"""The catalog of public datasets fleetlab knows: where each file comes from and its sha256.

The catalog is packaged data (``catalog.json`` beside this module, read with
:mod:`importlib.resources`): one entry per dataset folder of the public mirror
(``../shared/data`` laid out as ``NAME/<path>``), with the upstream URL of every file
it can be downloaded from, how the mirror's copy relates to the upstream bytes
(identical, or gzip'd), sha256 and size of the file, and the reader format that turns
it into a canonical table (``None`` for documentation and auxiliary files).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleetlab.errors import DataNotFoundError

CATALOG_RESOURCE = "catalog.json"


class ArchiveMember(BaseModel):
    """One upstream file packed into a ``tar.gz`` dataset file by the mirror.

    Attributes
    ----------
    name
        Path inside the archive (also the upstream path relative to the repository).
    size, sha256
        Size in bytes and hex sha256 of the member's bytes.
    url
        Official URL of the member (a raw GitHub URL at the pinned commit).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    url: str


class DatasetFile(BaseModel):
    """One file of a dataset, as laid out in the cache and the mirror.

    Attributes
    ----------
    path
        Path relative to the dataset folder (``NAME/<path>`` in a mirror).
    size
        Size in bytes of the file as laid out.
    sha256
        Hex sha256 of the file as laid out (the mirror's bytes).
    format
        Reader format name (see :func:`fleetlab.traces.formats`) that converts this file
        to a canonical table, or ``None`` for docs and auxiliary data.
    url
        Official public URL the file's content is downloaded from, or ``None`` when the
        file was re-packed by the mirror and only a mirror can provide it.
    encoding
        ``"identity"``: the file is the downloaded bytes; ``"gzip"``: it is those bytes
        gzip-compressed; ``"tar.gz"``: it is a gzip'd tar of ``members``, each
        downloaded from its own URL.
    member
        When ``url`` is an archive (a wheel / zip), the member to extract.
    url_sha256
        Hex sha256 of the bytes at ``url`` (the archive for ``member`` files).
    content_sha256
        Hex sha256 of the file's content once decompressed (equals ``sha256`` for
        ``identity`` files); a re-compressed download is verified against it. For
        ``tar.gz`` files: the sha256 of the member manifest (see :func:`tar_manifest`).
    members
        The upstream files of a ``tar.gz`` file, sorted by name.
    source
        Where the file comes from, in words (repository@commit:path or how it was derived).
    """

    model_config = ConfigDict(frozen=True)

    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    format: str | None = None
    url: str | None = None
    encoding: Literal["identity", "gzip", "tar.gz"] = "identity"
    member: str | None = None
    url_sha256: str | None = None
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str
    members: tuple[ArchiveMember, ...] = ()

    @property
    def downloadable(self) -> bool:
        """True if the file can be fetched from official URLs (not only from a mirror)."""
        return self.url is not None or bool(self.members)


def tar_manifest(members: list[tuple[str, str]]) -> str:
    """The sha256 identifying a tar's content: over sorted ``"<name> <sha256>\\n"`` lines.

    Two archives with the same member names and bytes have the same manifest hash,
    whatever their tar headers, order or compression.
    """
    lines = "".join(f"{name} {sha}\n" for name, sha in sorted(members))
    return hashlib.sha256(lines.encode()).hexdigest()


def tar_members(path: Path) -> list[tuple[str, str, int]]:
    """``(name, sha256, size)`` of every regular file in the tar.gz at ``path``, streaming."""
    import tarfile

    out = []
    with tarfile.open(path, "r:gz") as tar:
        for info in tar:
            if not info.isfile():
                continue
            f = tar.extractfile(info)
            assert f is not None
            digest = hashlib.sha256()
            while chunk := f.read(1 << 20):
                digest.update(chunk)
            out.append((info.name, digest.hexdigest(), info.size))
    return out


class Dataset(BaseModel):
    """One public dataset: what it is, its licence and citation, and its files.

    Attributes
    ----------
    name
        Short name, equal to the dataset's folder in a mirror.
    title, description
        What the dataset holds.
    license
        Licence of the data (and of the repository it is taken from, where different).
    homepage
        The dataset's public page.
    urls
        Official download locations (repository folders at the pinned commit, archives).
    citation
        The paper to cite.
    files
        Every file, see :class:`DatasetFile`.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    title: str
    description: str
    license: str
    homepage: str
    urls: tuple[str, ...]
    citation: str
    files: tuple[DatasetFile, ...]

    @property
    def size(self) -> int:
        """Total size in bytes of the dataset's files."""
        return sum(f.size for f in self.files)

    @property
    def formats(self) -> tuple[str, ...]:
        """The reader formats used by the dataset's convertible files, sorted."""
        return tuple(sorted({f.format for f in self.files if f.format}))

    def file(self, path: str) -> DatasetFile:
        """The file at ``path`` (relative to the dataset folder).

        Raises
        ------
        DataNotFoundError
            No such file in the dataset; the message shows some that exist.
        """
        wanted = path.strip("/")
        for f in self.files:
            if f.path == wanted:
                return f
        sample = ", ".join(f.path for f in self.files[:8])
        raise DataNotFoundError(
            f"dataset {self.name!r} has no file {path!r}; it has {len(self.files)} files, e.g. {sample}"
        )


def _load() -> tuple[Dataset, ...]:
    text = resources.files("fleetlab.traces").joinpath(CATALOG_RESOURCE).read_text("utf-8")
    data = json.loads(text)
    return tuple(Dataset.model_validate(d) for d in data["datasets"])


def datasets() -> tuple[Dataset, ...]:
    """Every dataset of the catalog, sorted by name.

    Returns
    -------
    tuple of Dataset
        Frozen entries; see :class:`Dataset`.
    """
    return _load()


def dataset(name: str) -> Dataset:
    """The catalog entry called ``name``.

    Raises
    ------
    DataNotFoundError
        Unknown name; the message lists the known datasets.
    """
    entries = _load()
    for entry in entries:
        if entry.name == name:
            return entry
    known = "\n".join(f"  {d.name:<32} {d.title}" for d in entries)
    raise DataNotFoundError(f"unknown dataset {name!r}. Known datasets:\n{known}")


def dump_catalog(data: dict[str, Any]) -> str:
    """Serialise the catalog as JSON with one dataset field / file entry per line (diffable)."""
    out = ["{", f' "version": {json.dumps(data["version"])},', ' "datasets": [']
    for i, ds in enumerate(data["datasets"]):
        out.append("  {")
        fields = [(k, v) for k, v in ds.items() if k != "files"]
        out += [f"   {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in fields]
        out.append('   "files": [')
        files = [json.dumps(f, ensure_ascii=False) for f in ds["files"]]
        out += [f"    {f}," for f in files[:-1]] + [f"    {files[-1]}"]
        out.append("   ]")
        out.append("  }," if i < len(data["datasets"]) - 1 else "  }")
    out += [" ]", "}"]
    return "\n".join(out) + "\n"


def refresh_catalog(mirror: Path, out: Path) -> dict[str, int]:
    """Re-measure every catalog file in ``mirror`` and write the catalog to ``out``.

    Keeps each entry's metadata, URLs, encodings and sources; recomputes ``size``,
    ``sha256``, ``content_sha256`` (and ``url_sha256`` of plain URLs) from the mirror
    files, and ``format`` with :func:`fleetlab.traces.detect` (``None`` where no reader
    recognises the file). Maintainers run ``python -m fleetlab.traces._catalog MIRROR``
    after a reader is added or the mirror changes.

    Returns
    -------
    dict
        Counts: datasets, files, convertible files.
    """
    from fleetlab.errors import FleetlabError
    from fleetlab.traces._api import detect, formats

    known = {f.name for f in formats()}
    text = resources.files("fleetlab.traces").joinpath(CATALOG_RESOURCE).read_text("utf-8")
    data = json.loads(text)
    files = convertible = 0
    for ds in data["datasets"]:
        for f in ds["files"]:
            path = mirror / ds["name"] / f["path"]
            raw = path.read_bytes()
            f["size"], f["sha256"] = len(raw), hashlib.sha256(raw).hexdigest()
            if f["encoding"] == "tar.gz":
                found = {name: (sha, size) for name, sha, size in tar_members(path)}
                listed = {m["name"] for m in f["members"]}
                if listed != set(found):
                    diff = sorted(listed ^ set(found))[:5]
                    raise ValueError(f"{path}: members differ from the catalog, e.g. {diff}")
                for m in f["members"]:
                    m["sha256"], m["size"] = found[m["name"]]
                f["content_sha256"] = tar_manifest([(n, v[0]) for n, v in found.items()])
            else:
                content = gzip.decompress(raw) if f["encoding"] == "gzip" else raw
                f["content_sha256"] = hashlib.sha256(content).hexdigest()
            if f.get("url") and not f.get("member"):
                f["url_sha256"] = f["content_sha256"]
            try:
                fmt: str | None = detect(path).name
            except FleetlabError:
                fmt = None
            f["format"] = fmt if fmt in known else None
            files += 1
            convertible += f["format"] is not None
    out.write_text(dump_catalog(data), encoding="utf-8")
    return {"datasets": len(data["datasets"]), "files": files, "convertible": convertible}


if __name__ == "__main__":  # pragma: no cover - maintainer tool
    import sys

    target = Path(__file__).with_name(CATALOG_RESOURCE)
    print(refresh_catalog(Path(sys.argv[1]), target))
