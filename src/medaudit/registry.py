"""What is available by name: encoders, slicers, filters, corruptions, training recipes
(``medaudit list WHAT``)."""

from __future__ import annotations

from collections.abc import Callable

from medaudit.errors import InputError

__all__ = ["LISTS", "available"]


def _encoders() -> list[str]:
    from medaudit.audit.config import DEFAULT_ENCODERS
    from medaudit.audit.encoders import list_encoders

    rows = []
    for modality, names in list_encoders().items():
        for n in names:
            rows.append(f"{modality}\t{n}" + ("\t(default)" if DEFAULT_ENCODERS.get(modality) == n else ""))
    return rows


def _slicers() -> list[str]:
    from medaudit.audit.slicers import SLICERS

    return [f"{name}\t{cls.__name__}" for name, cls in SLICERS.items()]


def _filters(test_only: bool) -> list[str]:
    from medaudit.texture.filters.registry import FILTERS

    return [
        f"{name}\t{spec.family}"
        for name, spec in FILTERS.items()
        if not (test_only and (spec.family == "texture" or spec.needs_label))
    ]


def _recipes() -> list[str]:
    from medaudit.texture.recipes import RECIPES

    return [f"{name}\t{cls.__name__}" for name, cls in RECIPES.items()]


LISTS: dict[str, Callable[[], list[str]]] = {
    "encoders": _encoders,
    "slicers": _slicers,
    "filters": lambda: _filters(test_only=False),
    "corruptions": lambda: _filters(test_only=True),
    "recipes": _recipes,
}


def available(what: str) -> list[str]:
    """One line per available item of kind ``what`` (tab-separated name and detail)."""
    if what not in LISTS:
        raise InputError(f"medaudit list '{what}': choose from {', '.join(LISTS)}")
    return LISTS[what]()
