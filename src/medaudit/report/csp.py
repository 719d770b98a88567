"""Safe inline data and a hash-based Content-Security-Policy for self-contained HTML reports.

* :func:`json_script` turns a Python value into the text of a ``<script type="application/json">``
  data block. ``<``, ``>`` and ``&`` become ``\\u003c``, ``\\u003e``, ``\\u0026`` and U+2028/U+2029 become
  ``\\u2028``/``\\u2029``, so no string in the data can close the element, open a comment or a
  nested script, or break a JavaScript parser; ``JSON.parse`` restores the original text.
* :func:`apply_csp` fills the CSP meta tag of a rendered page: every inline ``<style>`` element and
  every executable inline ``<script>`` element is allowed by the SHA-256 hash of its exact text
  (computed on the rendered page), never by ``'unsafe-inline'``. Nothing may be fetched
  (``default-src 'none'``, ``connect-src 'none'``), images only from ``data:`` URIs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from markupsafe import Markup

__all__ = ["CSP_PLACEHOLDER", "apply_csp", "csp_policy", "json_script"]

CSP_PLACEHOLDER = "__MEDAUDIT_CSP_POLICY__"

_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
# Only elements written by our own templates can match: every text that comes from data is escaped
# (HTML text by jinja2, the data block by json_script), so it contains no literal "<style" / "<script".
_STYLE_RE = re.compile(r"<style>(.*?)</style>", re.S)
_SCRIPT_RE = re.compile(r"<script(\s[^>]*)?>(.*?)</script>", re.S)


def json_script(value: Any) -> Markup:
    """The text of a JSON data block for ``value`` (plain JSON types; NaN is rejected)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Markup(text.translate(_JSON_ESCAPES))


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _executable(attrs: str | None) -> bool:
    """A script element runs unless its type is a data block (anything but JavaScript / module)."""
    m = re.search(r"""\btype\s*=\s*["']?([^"'\s>]+)""", attrs or "")
    return m is None or m.group(1).lower() in ("text/javascript", "module", "application/javascript")


def csp_policy(html: str) -> str:
    """The policy for a rendered page: hashes of its inline styles and executable inline scripts."""
    styles = sorted({_sha256(m.group(1)) for m in _STYLE_RE.finditer(html)})
    scripts = sorted({_sha256(m.group(2)) for m in _SCRIPT_RE.finditer(html) if _executable(m.group(1))})
    parts = [
        "default-src 'none'",
        "img-src data:",
        f"style-src {' '.join(styles) or chr(39) + 'none' + chr(39)}",
        f"script-src {' '.join(scripts) or chr(39) + 'none' + chr(39)}",
        "connect-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ]
    return "; ".join(parts)


def apply_csp(html: str) -> str:
    """Replace the page's first :data:`CSP_PLACEHOLDER` (in its CSP meta tag) by :func:`csp_policy`."""
    head, sep, tail = html.partition(CSP_PLACEHOLDER)
    if not sep:
        raise ValueError("the page has no CSP placeholder")
    return head + csp_policy(head + tail) + tail
