"""The model-card schema, validated on load: every key and type, one-line errors naming the
card file and what to do (``docs/cards.md`` documents every key with an example).

Top level: ``name``, ``arch``, ``num_classes``, ``benchmark``, ``description``, and the tables
``[weights]``, ``[preprocess]``, ``[tags]``; nothing else.  ``[preprocess]`` is required except
for ``timm:`` cards, whose preprocessing is then resolved from timm's pretrained_cfg (and
recorded in ``ModelCard.preprocess_source``).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path

from robustbench_sys.zoo.card import ZOO_ARCHS, CardError, ModelCard, Preprocess
from robustbench_sys.zoo.preprocessing import make_preprocess, timm_preprocess

TOP_KEYS = ("name", "arch", "num_classes", "benchmark", "description", "weights", "preprocess", "tags")
LIBRARIES = ("timm", "torchvision", "zoo", "python", "onnx")
BENCHMARKS = ("imagenet", "mnist")
PREPROCESS_KEYS = ("decoder", "color", "resize", "input_size", "crop_pct", "mean", "std")
#: per weight source: the keys it requires and the keys it may have
SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pypi": (("package", "version", "member", "sha256"), ()),
    "pypi-sdist": (("package", "version", "member", "sha256"), ("sdist_sha256",)),
    "hf-hub": (("repo",), ("filename", "revision", "sha256")),
    "url": (("url", "sha256"), ()),
    "file": (("path", "sha256"), ()),
}
COMMON_WEIGHT_KEYS = ("source", "license", "key_map")
KEY_MAPS = ("by-order",)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEXPREFIX = re.compile(r"[0-9a-f]{8,64}")
#: weight-source values that name a file, package or place: one line, no control characters
_LOCATION_KEYS = ("path", "url", "repo", "filename", "revision", "package", "version", "member")


def keys_text(keys) -> str:
    """Key names for a one-line message: plain names as they are, any other (a TOML quoted key
    with spaces, quotes or a newline) as its repr."""
    return ", ".join(k if re.fullmatch(r"[\w.-]+", k, re.ASCII) else repr(k) for k in map(str, keys))


def _one_line(v: str) -> bool:
    return v.isprintable()


def card_from_toml(path: Path) -> ModelCard:
    """Parse and validate one ``.toml`` card."""
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise CardError(f"model card {path}: not valid TOML ({e})") from None
    except OSError as e:
        raise CardError(f"model card {path}: cannot be read ({e.strerror})") from None
    return card_from_dict(d, where=f"model card {path}", path=path)


def card_from_dict(d: dict, *, where: str, path: Path | None = None) -> ModelCard:
    """A validated :class:`ModelCard` from a card's TOML data; ``where`` names it in errors.

    A relative ``file`` weights path is taken relative to the card file."""
    def bad(msg: str) -> CardError:
        return CardError(f"{where}: {msg}")

    unknown = sorted(set(d) - set(TOP_KEYS))
    if unknown:
        raise bad(f"unknown key(s) {keys_text(unknown)}; valid top-level keys: {', '.join(TOP_KEYS)} "
                  "(see docs/cards.md)")
    name = _str(d, "name", bad, required=True)
    if not _one_line(name) or any(c in name for c in "/\\") or name != name.strip():
        raise bad(f"name {name!r}: give a one-line name without '/', '\\' or surrounding spaces (it names the "
                  "model in --model and in the results)")
    arch = _str(d, "arch", bad, required=True)
    library = arch.split(":", 1)[0]
    if library not in LIBRARIES or (library != "onnx" and ":" not in arch) or (library == "onnx" and arch != "onnx"):
        raise bad(f"arch must be 'timm:NAME[.TAG]', 'torchvision:NAME[.WEIGHTS]', 'zoo:{'|'.join(ZOO_ARCHS)}', "
                  f"'python:pkg.module:factory' or 'onnx', got {arch!r}")
    arch_name = arch.split(":", 1)[1] if ":" in arch else ""
    if library in ("timm", "torchvision", "zoo") and not arch_name:
        raise bad(f"arch {arch!r} names no architecture")
    if library == "zoo" and arch_name not in ZOO_ARCHS:
        raise bad(f"unknown zoo architecture {arch_name!r}; valid: {', '.join(ZOO_ARCHS)}")
    if library == "python" and not re.fullmatch(r"[\w.]+:[\w.]+", arch_name):
        raise bad(f"arch {arch!r}: give 'python:pkg.module:factory' (a module path and a callable in it)")
    benchmark = _str(d, "benchmark", bad, default="imagenet")
    if benchmark not in BENCHMARKS:
        raise bad(f"benchmark {benchmark!r} is unknown; valid: {', '.join(BENCHMARKS)}")
    num_classes = d.get("num_classes", 1000)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise bad(f"num_classes must be a positive integer, got {num_classes!r}")
    description = _str(d, "description", bad, default="")

    if "weights" not in d:
        if library != "python":
            raise bad("has no [weights] table; give source and sha256 (see docs/cards.md)")
        weights: dict = {}
    else:
        weights = check_weights(_table(d, "weights", bad), bad, base=path.parent if path else None)
        if library == "onnx" and weights["source"] != "file":
            raise bad("an onnx card's [weights] must be source = \"file\" with path = the .onnx file")
    tags = _table(d, "tags", bad) if "tags" in d else {}
    for k, v in tags.items():
        if not isinstance(v, (str, int, float, bool)):
            raise bad(f"[tags] {keys_text([k])} must be a string, number or boolean, got {type(v).__name__}")
        if isinstance(v, float) and not math.isfinite(v):
            raise bad(f"[tags] {keys_text([k])} must be a finite number, got {v!r}")

    if "preprocess" in d:
        pp, source = check_preprocess(_table(d, "preprocess", bad), bad), "card"
    elif library == "timm":
        try:
            pp, source = timm_preprocess(timm_tag(arch_name, weights))
        except CardError as e:
            raise bad(f"has no [preprocess] and {e}") from None
    else:
        raise bad(f"has no [preprocess] table, and a {library}: model's preprocessing cannot be resolved; add "
                  "[preprocess] with decoder, color, resize, input_size, crop_pct, mean, std (see docs/cards.md)")
    return ModelCard(name=name, arch=arch, num_classes=num_classes, weights=weights, preprocess=pp, tags=tags,
                     description=description, path=str(path) if path else "", benchmark=benchmark,
                     preprocess_source=source)


def timm_tag(arch_name: str, weights: dict) -> str:
    """The timm ``name.tag`` whose pretrained_cfg a ``timm:`` card stands for: the arch's own tag,
    else the tag of a ``timm/NAME.TAG`` hub repo, else the arch name (timm's default tag)."""
    if "." in arch_name:
        return arch_name
    repo = str(weights.get("repo", "")) if weights.get("source") == "hf-hub" else ""
    if repo.startswith("timm/") and repo[5:].split(".", 1)[0] == arch_name:
        return repo[5:]
    return arch_name


def check_weights(w: dict, bad, *, base: Path | None = None) -> dict:
    source = w.get("source")
    if not isinstance(source, str) or source not in SOURCES:
        raise bad(f"[weights] source {source!r} is unknown; valid: {', '.join(SOURCES)}")
    required, optional = SOURCES[source]
    if source == "file" and "path" not in w and "file" in w:
        raise bad("[weights] a file source is given as path = \"...\" (not file = ...)")
    missing = [k for k in required if k not in w]
    if missing:
        raise bad(f"[weights] source {source!r} needs {', '.join(missing)}")
    allowed = set(required) | set(optional) | set(COMMON_WEIGHT_KEYS)
    unknown = sorted(set(w) - allowed)
    if unknown:
        raise bad(f"[weights] unknown key(s) {keys_text(unknown)} for source {source!r}; valid: "
                  f"{', '.join(sorted(allowed))}")
    for k, v in w.items():
        if not isinstance(v, str):
            raise bad(f"[weights] {k} must be a string, got {type(v).__name__} {v!r}")
        if k in _LOCATION_KEYS and (not v.strip() or not _one_line(v)):
            raise bad(f"[weights] {k} must be a non-empty one-line string, got {v!r}")
    out = dict(w)
    sha = w.get("sha256", "")
    if source == "hf-hub" and sha == "":
        pass        # not pinned: the hash of the downloaded file is recorded with every result
    elif source == "url" and _HEXPREFIX.fullmatch(sha):
        pass        # torchvision names its files by a sha256 prefix (>= 8 hex digits)
    elif not _HEX64.fullmatch(sha):
        raise bad(f"[weights] sha256 must be 64 lowercase hex digits, got {sha!r}"
                  + (" (robustbench-sys zoo add computes it; or: sha256sum FILE)" if source == "file" else ""))
    if "sdist_sha256" in w and not _HEX64.fullmatch(w["sdist_sha256"]):
        raise bad(f"[weights] sdist_sha256 must be 64 lowercase hex digits, got {w['sdist_sha256']!r}")
    if "key_map" in w and w["key_map"] not in KEY_MAPS:
        raise bad(f"[weights] key_map {w['key_map']!r} is unknown; valid: {', '.join(KEY_MAPS)}")
    if source == "file":
        p = Path(os.path.expanduser(w["path"]))
        if not p.is_absolute() and base is not None:
            p = base / p
        out["path"] = str(p)
    return out


def check_preprocess(pp: dict, bad) -> Preprocess:
    """A validated :class:`Preprocess` from a ``[preprocess]`` table: every key required."""
    unknown = sorted(set(pp) - set(PREPROCESS_KEYS))
    if unknown:
        raise bad(f"[preprocess] unknown key(s) {keys_text(unknown)}; valid: {', '.join(PREPROCESS_KEYS)}")
    missing = [k for k in PREPROCESS_KEYS if k not in pp]
    if missing:
        raise bad(f"[preprocess] needs {', '.join(missing)} (every key is required; see docs/cards.md)")
    return make_preprocess(bad, **pp)


def _str(d: dict, key: str, bad, *, required: bool = False, default: str = "") -> str:
    if key not in d:
        if required:
            raise bad(f"has no {key} (see docs/cards.md)")
        return default
    v = d[key]
    if not isinstance(v, str) or (required and not v.strip()):
        raise bad(f"{key} must be a non-empty string, got {v!r}")
    return v


def _table(d: dict, key: str, bad) -> dict:
    v = d[key]
    if not isinstance(v, dict):
        raise bad(f"{key} must be a table ([{key}]), got {type(v).__name__}")
    return dict(v)
