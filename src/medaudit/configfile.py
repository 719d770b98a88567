"""Typed configs read from YAML/JSON files or flags, validated by pydantic, errors as one line.

Every config in medaudit (``AuditConfig``, ``TrainConfig``, the study config) is a pydantic model:
``lr: 3e-3`` in YAML is a number, ``iterations: "500"`` is coerced to 500 or refused with a line naming
the file and the key. :func:`read_config` is the one place where a config file becomes a model.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from medaudit.errors import InputError
from medaudit.io import missing_reason

__all__ = [
    "Config",
    "load_json_strict",
    "load_yaml_strict",
    "read_config",
    "read_config_text",
    "read_mapping",
    "refuse_bool_number",
    "validation_error",
    "yaml_error_text",
]

M = TypeVar("M", bound=BaseModel)


def refuse_bool_number(value: Any, annotation: Any) -> Any:
    """``value`` unless it is true / false (or a list or mapping holding one) for a field of numbers:
    pydantic reads ``iterations: yes`` as 1, ``seed: true`` as 1 and ``severity_version: true`` as the
    old table. Used as a ``mode="before"`` validator by every config model."""
    kind = str(annotation)
    items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
    if ("int" in kind or "float" in kind) and any(isinstance(x, bool) for x in items):
        raise ValueError("expected a number, not true/false")
    return value


#: largest config file read (configs are kilobytes; a device such as ``/dev/zero`` never ends)
MAX_CONFIG_BYTES = 16 * 2**20
#: most values a YAML config may hold once its aliases are expanded: nine lines of ``&a [*b, *b, ...]``
#: (a "billion laughs") stand for 10**9 values, which validating and hashing the config expanded
MAX_CONFIG_VALUES = 1_000_000


class Config(BaseModel):
    """Base of medaudit's configs: unknown keys and non-finite numbers refused, assignments validated, and a bad value given
    to the constructor raised as one :class:`InputError` line naming the key (an ``InputError`` is a
    ``ValueError``, like pydantic's own error)."""

    # a NaN or infinite number (``--lr nan``, ``y_weight: .inf``) is refused, not propagated
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            err = validation_error(exc, type(self).__name__)
            err.validation = exc  # type: ignore[attr-defined]  # for a caller naming another source
            raise err from None


def validation_error(exc: ValidationError, source: str) -> InputError:
    """One line naming ``source`` and the first failing key, e.g. ``a.yaml: key 'train.lr': ...``."""
    err = exc.errors()[0]
    inner = getattr((err.get("ctx") or {}).get("error"), "validation", None)
    if isinstance(inner, ValidationError):  # model_validate ran Config.__init__, which named the class
        return validation_error(inner, source)
    key = _key(err.get("loc", ()))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
    if not key:  # a rule over several keys: the message names them
        return InputError(f"{source}: {msg}")
    value = err.get("input")
    shown = "" if err.get("type") in ("extra_forbidden", "missing") else f" (got {value!r:.60})"
    return InputError(f"{source}: key '{key}': {msg}{shown}")


def _key(loc: tuple[Any, ...]) -> str:
    """A readable key path: ``train_filters[0].severities``; an index at the end (an element of a list
    value, shown in the message) is dropped."""
    parts = list(loc)
    while parts and isinstance(parts[-1], int):
        parts.pop()
    key = ""
    for p in parts:
        key += f"[{p}]" if isinstance(p, int) else (f".{p}" if key else str(p))
    return key


def load_yaml_strict(text: str, name: str, what: str = "config") -> Any:
    """``yaml.safe_load`` that refuses a duplicate mapping key and a non-text key (PyYAML keeps the
    last of two equal keys, so ``lr: 1e-3`` followed by ``lr: 1`` would silently train at 1), naming
    ``name``, the key and its line. Nesting too deep for the parser is one line too."""
    loader = _strict_loader()(text)
    loader.name = name
    try:
        data = loader.get_single_data()
        if _expanded_size(data) > MAX_CONFIG_VALUES:
            raise InputError(
                f"{name}: not a {what}: more than {MAX_CONFIG_VALUES:,} values (an alias *name counts "
                "as many values as it stands for)"
            )
        return data
    except RecursionError:
        raise InputError(f"{name}: not a {what} (lists or mappings nested too deeply)") from None
    finally:
        loader.dispose()


def _expanded_size(data: Any) -> int:
    """How many values ``data`` holds with every shared list or mapping counted once per use (as
    validating, copying or hashing it counts them), computed once per distinct object."""
    sizes: dict[int, int] = {}

    def size(obj: Any) -> int:
        if not isinstance(obj, (list, dict)):
            return 1
        if id(obj) not in sizes:
            items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
            sizes[id(obj)] = 1 + sum(size(x) for x in items)
        return sizes[id(obj)]

    return size(data)


def read_config_text(path: Path, what: str = "config file") -> str:
    """The UTF-8 text of a config file; a path that is not a regular file (a device such as
    ``/dev/zero``, a pipe) or holds more than :data:`MAX_CONFIG_BYTES` is refused naming it before it
    is read (reading either would not end, or fill the memory)."""
    if path.is_file():
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise InputError(f"{path}: not a {what}: {size:,} bytes, more than {MAX_CONFIG_BYTES:,}")
    elif path.exists() and not path.is_dir():  # a folder fails to read as one
        raise InputError(f"{path}: not a {what} (not a regular file)")
    return path.read_text(encoding="utf-8")


def load_json_strict(text: str, name: str) -> Any:
    """``json.loads`` that refuses a duplicate object key, naming ``name`` and the key."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise InputError(f"{name}: duplicate key '{k}'")
            out[k] = v
        return out

    return json.loads(text, object_pairs_hook=pairs)


@lru_cache(maxsize=1)
def _strict_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """A safe YAML loader whose mappings refuse duplicate and non-text keys."""

    def mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise InputError(
                    f"{loader.name}: line {line}: a mapping key must be plain text, not a {type(key).__name__}"
                )
            if key in keys:
                raise InputError(f"{loader.name}: duplicate key '{key}' (line {line})")
            keys.add(key)
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return StrictLoader


def yaml_error_text(exc: BaseException) -> str:
    """A YAML error as ``line 3, column 1: found character '\\t' that cannot start any token`` (the
    line of its problem mark, 1-based); any other error (or one without a mark) as its first line."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    hint = "; indent YAML with spaces, not TABs" if "\\t" in problem else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}{hint}"


def read_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML or JSON file whose top level is a mapping; bad files give one line naming them."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {missing_reason(p, 'config file')}")
    try:
        text = read_config_text(p)
        raw = (
            load_json_strict(text, str(p)) if p.suffix.lower() == ".json" else load_yaml_strict(text, str(p))
        )
    except InputError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise InputError(f"{p}: not a readable YAML/JSON config ({yaml_error_text(exc)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{p}: the top level must be a mapping of keys, not {type(raw).__name__}")
    return raw


def read_config(path: str | os.PathLike[str], model: type[M], **overrides: Any) -> M:
    """Validate the mapping in ``path`` (plus ``overrides``, which win) as ``model``."""
    raw = {**read_mapping(path), **overrides}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, str(path)) from None
