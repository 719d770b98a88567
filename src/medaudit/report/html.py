"""Shared HTML rendering: one jinja2 environment with autoescaping on, and figure embedding.

Every piece of user or report text goes through jinja2's autoescape, so a report that contains
``<script>`` is shown as text and never runs. Figures are embedded as base64 PNG data URIs so that
each report is a single self-contained file.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import jinja2
import markupsafe

_ENV: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(
            loader=jinja2.PackageLoader("medaudit.report", "templates"),
            autoescape=True,  # always on, whatever the template's extension
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=neutralise_controls,  # every {{ ... }} value, before escaping
        )
        _ENV.filters["neutralise"] = neutralise_controls
    return _ENV


# C0/C1 controls except tab/newline/carriage return, DEL, and the Unicode bidirectional controls
# (LRM, RLM, ALM, LRE/RLE/PDF/LRO/RLO, LRI/RLI/FSI/PDI) that can reorder what a reader sees.
_C0_C1 = [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)]
_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_VISIBLE = {c: f"[U+{c:04X}]" for c in (*_C0_C1, *_BIDI)}


def neutralise_controls(value: Any) -> Any:
    """Replace control and bidi-override characters in a string by a visible ``[U+XXXX]`` mark.

    Applied to every value a template prints (the environment's ``finalize``), so report text can
    neither hide nor reorder itself; non-strings pass through unchanged (``Markup`` stays ``Markup``).
    """
    if isinstance(value, str):
        out = value.translate(_VISIBLE)
        return type(value)(out) if isinstance(value, markupsafe.Markup) else out
    return value


def render(template: str, **context: Any) -> str:
    """Render a template from ``medaudit/report/templates`` with autoescaping; a page whose CSP meta
    tag holds :data:`~medaudit.report.csp.CSP_PLACEHOLDER` (every page template) gets the hash-based
    policy of :func:`~medaudit.report.csp.apply_csp`, never ``'unsafe-inline'``."""
    from medaudit.report.csp import CSP_PLACEHOLDER, apply_csp

    html = environment().get_template(template).render(**context)
    return apply_csp(html) if CSP_PLACEHOLDER in html else html


def figure_to_data_uri(fig: Any, dpi: int = 110) -> str:
    """Encode a matplotlib figure as a PNG data URI and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def array_to_data_uri(img: Any, size: int | None = 160) -> str:
    """Encode a 2-D array (any range; scaled to 0..255) as a PNG data URI, for thumbnails."""
    import numpy as np
    from PIL import Image

    a = np.asarray(img, dtype=np.float32)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    im = Image.fromarray((a * 255).astype(np.uint8))
    if size:
        im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
