"""Reading a spec: YAML or plain data in, a checked CampaignSpec or one SpecError line out,
naming the field path (``search.space.lr.low: must be > 0 when log is true``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bru_core.spec.campaign import CampaignSpec
from bru_core.spec.errors import FieldError, SpecError, SubKeyError, suggest
from bru_core.spec.parts import CompareSpec, ParamSpec, RepeatSpec, SearchSpec

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _loc(parts: tuple[Any, ...]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _PLAIN_KEY.fullmatch(str(part)) else repr(str(part))  # one line, whatever the key
            text += f".{key}" if text else key
    return text


_FIELDS_AT: dict[str, type[BaseModel]] = {
    "": CampaignSpec,
    "search": SearchSpec,
    "repeats": RepeatSpec,
    "compare": CompareSpec,
}


def _spec_error(exc: ValidationError) -> SpecError:
    # A misspelt key usually also makes a required key "missing": name the misspelling.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    message = first["msg"].removeprefix("Value error, ")
    context = first.get("ctx", {}).get("error")
    if isinstance(context, FieldError):
        return SpecError(str(context))
    loc = tuple(first["loc"])
    if isinstance(context, SubKeyError):
        return SpecError(f"{_loc((*loc, context.key))}: {context}")
    if first["type"] == "invalid_key":  # YAML keys such as 1: or on: (a boolean)
        return SpecError(f"{_loc(loc[:-1])}: key {loc[-1]!r} is not text; quote it or use a valid key name")
    if first["type"] == "extra_forbidden":
        parent = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
        model = _FIELDS_AT.get(parent, ParamSpec if parent.startswith("search.space") else None)
        valid = tuple(model.model_fields) if model is not None else ()
        return SpecError(f"{_loc(loc)}: unknown key{suggest(str(loc[-1]), valid)}")
    if first["type"] == "missing":
        return SpecError(f"{_loc(loc)}: required")
    path = _loc(loc)
    return SpecError(f"{path}: {message}" if path else message)


def parse_spec(data: Any, source: str = "spec", *, stored: bool = False) -> CampaignSpec:
    """Check plain data (parsed YAML) and return the spec, or raise SpecError. ``stored``:
    the spec of a campaign that already ran (its record in MLflow), read back without the
    design checks, which it passed or predates."""
    if data is None:
        raise SpecError(f"{source}: empty; a campaign spec needs at least name, tasks, activations and search")
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: must be a mapping with name, tasks, activations, search, ... (got {type(data).__name__})"
        )
    try:
        return CampaignSpec.model_validate(data, context={"stored": stored})
    except ValidationError as exc:
        raise _spec_error(exc) from None


def load_spec(path: Path | str) -> CampaignSpec:
    """Read and check a YAML campaign spec; every problem is one SpecError line."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    try:
        return parse_spec(data, str(path))
    except SpecError as exc:
        message = str(exc)
        raise SpecError(message if message.startswith(str(path)) else f"{path}: {message}") from None
