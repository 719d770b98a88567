"""The slice browser's data and safety (no browser): JSON data block, CSP hashes, caps, highlights,
and the notebook API of AuditResult (to_frame, members, _repr_html_)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medaudit.audit.pipeline import AuditConfig, AuditResult, run_audit
from medaudit.errors import InputError
from medaudit.report.audit_report import render_audit_report
from medaudit.report.csp import CSP_PLACEHOLDER, apply_csp, csp_policy, json_script
from medaudit.report.slice_browser import (
    BrowserLimits,
    browser_data,
    concept_names,
    highlight_spans,
    rule_text,
)

PAYLOAD = "<script>document.title='pwned'</script>"


def make_cases(folder: Path, n: int = 60) -> Path:
    """A small case table (PNG images, reports carrying a script payload, metadata) written as CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = i % 2
        pred = 1 - label if i % 5 == 0 else label
        Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
        finding = ["effusion", "edema", "nodule"][i % 3]
        rows.append(
            {
                "id": f"case{i:03d}",
                "label": label,
                "prob": 0.8 if pred else 0.2,
                "image": f"{i}.png",
                "report": f"Finding: {finding}. {PAYLOAD} No pneumothorax.\u2028Stable & unchanged.",
                "site": PAYLOAD if i % 3 == 0 else ["A", "B"][i % 2],
                "view": ["PA", "AP", "LAT"][i % 3],
            }
        )
    path = folder / "cases.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def fast_config(cache: Path) -> AuditConfig:
    """Report + metadata only (no image encoder), so an audit takes a second or two."""
    return AuditConfig(
        meta=["site", "view"],
        modalities=("report", "metadata"),
        encoder_kwargs={"report": {"dim": 8}},
        n_slices=3,
        n_components=4,
        pca=None,
        cache_dir=cache,
    )


_SHARED: dict[str, AuditResult] = {}


def shared_audit(factory: pytest.TempPathFactory) -> AuditResult:
    """One small audit for this module and the browser tests (run once per session; read-only)."""
    if "audit" not in _SHARED:
        tmp = factory.mktemp("browser")
        _SHARED["audit"] = run_audit(make_cases(tmp / "cases", n=80), fast_config(tmp / "cache"), tmp / "out")
    return _SHARED["audit"]


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> AuditResult:
    return shared_audit(tmp_path_factory)


def _scores(res: AuditResult) -> np.ndarray:
    return res.membership.drop(columns="id").to_numpy()


def test_json_script_cannot_leave_its_element_and_round_trips() -> None:
    value = {"t": "</script><!-- & \u2028\u2029 <b>", "n": [1, 2.5, None]}
    text = str(json_script(value))
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == value
    with pytest.raises(ValueError):
        json_script({"x": float("nan")})


def test_csp_hashes_inline_style_and_scripts_but_not_data_blocks() -> None:
    page = (
        f'<meta content="{CSP_PLACEHOLDER}"><style>b{{}}</style><script type="application/json">{{}}</script>'
        f"<script>var a=1;</script><p>{CSP_PLACEHOLDER}</p>"
    )
    out = apply_csp(page)
    digest = base64.b64encode(hashlib.sha256(b"var a=1;").digest()).decode()
    css = base64.b64encode(hashlib.sha256(b"b{}").digest()).decode()
    policy = csp_policy(page)
    assert f"script-src 'sha256-{digest}'" in policy and f"style-src 'sha256-{css}'" in policy
    assert "'unsafe-inline'" not in policy and "default-src 'none'" in policy
    assert "connect-src 'none'" in policy and "img-src data:" in policy
    assert out.count(CSP_PLACEHOLDER) == 1  # only the meta tag's placeholder is filled
    assert csp_policy("<p>no scripts</p>").count("'none'") >= 4


def test_highlight_spans_marks_whole_sentences_with_every_term_word() -> None:
    text = "Heart size normal. A support device is seen.\nNo pleural effusion! Lungs clear."
    spans = highlight_spans(text, ["support devices", "pleural effusion"])
    assert [text[a:b] for a, b in spans] == ["A support device is seen.", "No pleural effusion!"]
    assert highlight_spans(text, ["pneumothorax"]) == []
    assert highlight_spans("Stable 1 cm nodule. 1 view.", ["no_acute 1"]) == []  # numbers alone match nothing
    assert highlight_spans("", ["x"]) == []


def test_optional_rule_and_concept_fields_are_made_readable() -> None:
    assert rule_text("view = AP ∧ device") == "view = AP ∧ device"
    assert rule_text([{"text": "view = AP"}, "concept(device) = positive"]) == (
        "view = AP ∧ concept(device) = positive"
    )
    assert rule_text({"predicates": ["a", "b"]}) == "a ∧ b"
    assert concept_names(["edema", {"concept": "support device", "state": "positive"}]) == [
        "edema",
        "support device (positive)",
    ]
    assert concept_names(None) == []


def test_browser_data_lists_every_member_and_caps_reports_and_thumbnails(audit: AuditResult) -> None:
    lim = BrowserLimits(all_reports_up_to=10, reports_per_slice=4, thumbs_per_slice=2, report_chars=20)
    data = browser_data(audit.payload, audit.table, _scores(audit), lim)
    ids = data["cases"]["id"]
    for s, d in zip(audit.slices, data["slices"], strict=True):
        listed = s["member_ids"] or s["exemplar_ids"]
        assert [ids[p] for p in d["rows"]] == listed  # every member, best first
        assert len(d["score"]) == len(listed) and all(0 <= x <= 1000 for x in d["score"])
    assert not data["all_reports"] and len(data["reports"]) <= 4 * len(audit.slices)
    assert all(len(r[1]) <= 20 for r in data["reports"])
    assert 0 < len(data["thumbs"]) <= 2 * len(audit.slices)
    assert all(t[1].startswith("data:image/jpeg;base64,") for t in data["thumbs"])
    full = browser_data(audit.payload, audit.table, _scores(audit))
    assert full["all_reports"] and len(full["reports"]) == len(audit.table)


def test_report_page_embeds_data_safely_under_a_hash_csp(audit: AuditResult) -> None:
    raw = audit.paths["report"].read_text()
    assert PAYLOAD not in raw and "\u2028" not in raw
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', raw)
    assert meta and "'unsafe-inline'" not in meta.group(1) and "'sha256-" in meta.group(1)
    block = re.search(r'<script type="application/json" id="audit-data">(.*?)</script>', raw, re.S)
    assert block is not None
    data = json.loads(block.group(1))
    assert any(PAYLOAD in r[1] for r in data["reports"])  # the text survives, only encoded
    assert raw.count("<script") == 2  # the data block and the browser script, nothing else


def test_optional_slice_fields_render_as_rule_line_and_chips(audit: AuditResult) -> None:
    payload = json.loads(json.dumps(audit.payload))
    payload["slices"][0].update(
        kind="rules", rule=[PAYLOAD, "view = AP"], concepts=[{"concept": "edema", "state": "positive"}]
    )
    page = render_audit_report(payload, audit.table, _scores(audit), None)
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt; ∧ view = AP" in page
    assert 'class="chip" data-term="edema (positive)"' in page and "<th>kind</th>" in page


def test_to_frame_members_and_repr_html(audit: AuditResult) -> None:
    frame = audit.to_frame()
    assert list(frame.index) == [s["rank"] for s in audit.slices]
    assert frame["size"].tolist() == [s["size"] for s in audit.slices]
    s = next(s for s in audit.slices if s["size"])
    mem = audit.members(s["rank"])
    assert mem["id"].tolist() == s["member_ids"]
    assert (mem["score"] > 0.5).all() and mem["score"].is_monotonic_decreasing
    assert {"label", "pred", "prob", "error", "report", "image", "site", "view"} <= set(mem.columns)
    assert int(mem["error"].sum()) == s["n_errors"]
    pd.testing.assert_frame_equal(audit.members(s["name"]), mem)
    rest = audit.members(s["rank"], complement=True)
    assert len(rest) + len(mem) == len(audit.table) and not set(rest["id"]) & set(mem["id"])
    with pytest.raises(InputError, match="no slice '99'"):
        audit.members(99)
    html = audit._repr_html_()
    assert html.startswith("<div>") and f"{len(audit.table)} cases" in html
    assert "<script" not in html
