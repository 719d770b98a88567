"""Training recipes in a study config (``recipes:``), including leave-one-family-out.

::

    recipes:
      - {name: bigaug, options: {k: 3, p: 0.8}}
      - {name: synthseg}
      - {name: bigaug, leave_one_family_out: true}            # one model per family of its pool
      - {name: mixed, leave_one_family_out: [noise, blur]}    # or the families listed

Each entry (and each left-out family) becomes one training task per seed, next to the study's
``train_filters`` (the filtered-copy protocol, kept as the reproduction). A leave-one-family-out
model never sees family F (``exclude_families: [F]``); testing it on F is the strict test of "unseen".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medaudit.errors import InputError


@dataclass(frozen=True)
class RecipeEntry:
    """One trained recipe variant of a study: its label, recipe name, options and left-out family."""

    label: str
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    left_out: str | None = None


def _families_of(name: str, options: Mapping[str, Any]) -> list[str]:
    from medaudit.texture.recipes import make_recipe

    return list(make_recipe(name, options).train_families())


def parse_recipes(raw: Any, source: str) -> tuple[RecipeEntry, ...]:
    """Validate the ``recipes:`` list of a study config and expand leave-one-family-out entries."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InputError(f"{source}: key 'recipes': expected a list of {{name, options}}")
    out: list[RecipeEntry] = []
    for i, item in enumerate(raw):
        key = f"recipes[{i}]"
        item = {"name": item} if isinstance(item, str) else item
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise InputError(f"{source}: key '{key}': expected a mapping with 'name'")
        bad = sorted(set(item) - {"name", "options", "leave_one_family_out"})
        if bad:
            raise InputError(
                f"{source}: key '{key}.{bad[0]}': unknown key; allowed: name, options, leave_one_family_out"
            )
        name, raw_opts = str(item["name"]), item.get("options")
        if raw_opts is not None and not isinstance(raw_opts, Mapping):
            raise InputError(
                f"{source}: key '{key}.options': expected a mapping of recipe options, got {raw_opts!r:.60}"
            )
        opts = dict(raw_opts or {})
        if name in ("clean", "filtered"):
            raise InputError(f"{source}: key '{key}.name': '{name}' is set through train_filters")
        try:
            fams = _families_of(name, opts)  # validates the options (exclude_families a list of names)
        except InputError as exc:
            raise InputError(f"{source}: key '{key}': {exc}") from None
        lofo = item.get("leave_one_family_out", False)
        if lofo is False or lofo is None:
            out.append(_entry(name, opts, None, source, key))
            continue
        left = fams if lofo is True else lofo
        if not isinstance(left, list) or not left or any(f not in fams for f in left):
            raise InputError(
                f"{source}: key '{key}.leave_one_family_out': expected true or a list of the recipe's families {fams}"
            )
        for fam in left:
            o = {**opts, "exclude_families": sorted({*(opts.get("exclude_families") or []), fam})}
            out.append(_entry(name, o, fam, source, key))
    labels = [e.label for e in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise InputError(f"{source}: key 'recipes': the same recipe is listed twice ({dup[0]})")
    return tuple(out)


def _entry(name: str, options: dict[str, Any], left_out: str | None, source: str, key: str) -> RecipeEntry:
    """The entry of ``name`` with ``options``; an error (e.g. nothing left to apply once ``left_out`` is
    excluded) is one line naming ``source`` and ``key``."""
    try:
        return RecipeEntry(_label(name, options), name, options, left_out)
    except InputError as exc:
        where = f"{key}.leave_one_family_out ({left_out})" if left_out is not None else key
        raise InputError(f"{source}: key '{where}': {exc}") from None


def _label(name: str, options: Mapping[str, Any]) -> str:
    """``bigaug[-noise](k=2)``: the recipe, its left-out families and its other options."""
    from medaudit.texture.recipes import make_recipe

    base = make_recipe(name, options).describe()
    extra = {k: v for k, v in options.items() if k != "exclude_families"}
    if extra:
        base += "(" + ",".join(f"{k}={extra[k]}" for k in sorted(extra)) + ")"
    return base


def recipe_train_specs(
    entries: tuple[RecipeEntry, ...],
    seeds: tuple[int, ...],
    data: Mapping[str, Any],
    train: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Training-task specs of the recipe entries (one per entry and seed)."""
    return [
        {
            "data": data,
            "train": dict(sorted(train.items())),
            "train_filter": e.label,
            "train_severity": 0,
            "seed": int(seed),
            "recipe": e.name,
            "recipe_options": dict(e.options),
            "left_out": e.left_out,
        }
        for seed in seeds
        for e in entries
    ]
