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
        )
    return _ENV


def render(template: str, **context: Any) -> str:
    """Render a template from ``medaudit/report/templates`` with autoescaping."""
    return environment().get_template(template).render(**context)


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
