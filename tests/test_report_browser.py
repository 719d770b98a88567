"""report.html in headless Chromium, driven by Playwright through the DevTools protocol.

Real clicks and typing: sort a column, open a slice, page to its last member, filter by concept, search
the reports; report text containing ``<script>`` stays text, and the page raises no CSP violation.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medaudit.audit.pipeline import AuditResult
from medaudit.report.audit_report import render_audit_report
from test_slice_browser import PAYLOAD, shared_audit

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

# CI installs Debian's chromium and sets MEDAUDIT_REQUIRE_BROWSER=1, so there a missing browser (or a
# missing playwright) fails the run instead of skipping these tests silently.
_REQUIRED = os.environ.get("MEDAUDIT_REQUIRE_BROWSER") == "1"
_HAVE = CHROMIUM.exists() and importlib.util.find_spec("playwright") is not None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not _HAVE and not _REQUIRED, reason="needs /usr/bin/chromium and playwright"),
]


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> AuditResult:
    return shared_audit(tmp_path_factory)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


class Page:
    """A page on report.html that records console messages, page errors and network requests."""

    def __init__(self, browser: Any, html: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.console: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(html.as_uri())

    def ready(self) -> Any:
        self.page.wait_for_selector("body[data-ready='1']", timeout=15000)
        return self.page

    def slice_rows(self) -> list[dict[str, str]]:
        return self.page.eval_on_selector_all(
            "#slice-table tbody tr",
            "rs => rs.map(r => ({rank: r.dataset.rank, size: r.dataset.size, hidden: r.hidden}))",
        )

    def clean(self) -> bool:
        bad = [m for m in self.console if "error" in m.split(":")[0] or "Content Security Policy" in m]
        return not bad and all(u.startswith(("file:", "data:")) for u in self.requests)


@pytest.fixture()
def page(browser: Any, audit: AuditResult) -> Iterator[Page]:
    p = Page(browser, audit.paths["report"])
    yield p
    p.page.close()


def test_sort_open_page_to_last_member_without_csp_violation(page: Page, audit: AuditResult) -> None:
    pg = page.ready()
    assert pg.title() == "medaudit audit report"
    sizes = [s["size"] for s in audit.slices]
    pg.click("#slice-table th[data-key=size] button")  # first click: largest first
    assert [int(r["size"]) for r in page.slice_rows()] == sorted(sizes, reverse=True)
    assert pg.get_attribute("#slice-table th[data-key=size]", "aria-sort") == "descending"
    pg.click("#slice-table th[data-key=size] button")
    assert [int(r["size"]) for r in page.slice_rows()] == sorted(sizes)

    big = max(audit.slices, key=lambda s: s["size"])
    members = big["member_ids"]
    assert len(members) > 10  # so paging is exercised
    pg.click(f"#slice-table tr[data-rank='{big['rank']}'] td:nth-child(3)")
    detail = pg.locator(f"#slice-{big['rank']}")
    assert detail.is_visible()
    assert all(not pg.locator(f"#slice-{s['rank']}").is_visible() for s in audit.slices if s is not big)
    assert detail.locator(".member .case-id").first.text_content() == members[0]
    detail.locator(".pager .last").click()
    cards = detail.locator(".member .case-id").all_text_contents()
    assert cards[-1] == members[-1] and len(cards) == (len(members) - 1) % 10 + 1
    status = detail.locator(".pager .status").text_content()
    assert status is not None and status.endswith(f"of {len(members)}")
    assert detail.locator(".pager .next").is_disabled()
    detail.locator(".pager .first").click()
    assert detail.locator(".member .case-id").first.text_content() == members[0]
    assert detail.locator(".member img.thumb").count() >= 1  # thumbnails of the best members
    assert page.clean(), page.console + page.requests


def test_report_with_script_tag_shows_as_text(page: Page, audit: AuditResult) -> None:
    pg = page.ready()
    rank = next(s["rank"] for s in audit.slices if s["size"])
    pg.click(f"#slice-table tr[data-rank='{rank}'] a")
    report = pg.locator(f"#slice-{rank} .member p.report").first
    assert PAYLOAD in (report.text_content() or "")
    assert pg.title() == "medaudit audit report"  # the payload never ran
    assert pg.locator("script").count() == 2  # data block + browser script; none from report text
    assert pg.locator(".member .meta").first.text_content()  # metadata shown (also carries the payload)
    pg.fill("#search-box", "<script>")
    hits = pg.locator("#search-results li.hit")
    assert hits.count() == min(len(audit.table), 100)
    assert hits.first.locator("mark").text_content() == "<script>"
    assert pg.title() == "medaudit audit report" and page.clean(), page.console


def test_search_filter_and_complement(page: Page, audit: AuditResult) -> None:
    pg = page.ready()
    pg.fill("#search-box", "edema")
    reports = audit.table.df["report"].str.lower()
    count = pg.locator("#search-results .hit-count").text_content() or ""
    assert count.startswith(f"{int(reports.str.contains('edema').sum())} reports match")
    pg.fill("#filter-size", str(10**6))
    assert all(r["hidden"] for r in page.slice_rows())
    assert pg.locator("#filter-count").text_content() == f"0 of {len(audit.slices)} slices shown"
    pg.fill("#filter-size", "0")
    assert not any(r["hidden"] for r in page.slice_rows())
    s = audit.slices[0]
    table = pg.locator(f"#slice-{s['rank']} table.compare")
    assert table.locator('tr:has(th:text-is("cases")) td').all_text_contents() == [
        str(s["size"] or len(s["exemplar_ids"])),
        str(len(audit.table) - (s["size"] or len(s["exemplar_ids"]))),
    ]
    assert page.clean(), page.console


def test_filter_by_concept_from_optional_slice_fields(
    browser: Any, audit: AuditResult, tmp_path: Path
) -> None:
    payload = json.loads(json.dumps(audit.payload))
    payload["target"] = "Pneumothorax"  # every report says "No pneumothorax."
    payload["slices"][-1].update(
        kind="rules",
        rule="view = AP ∧ concept(support device) = positive",
        concepts=[{"concept": "support device", "state": "positive"}, PAYLOAD],
    )
    scores = audit.membership.drop(columns="id").to_numpy(dtype=np.float64)
    html = tmp_path / "report.html"
    html.write_text(render_audit_report(payload, audit.table, scores, None), encoding="utf-8")
    page = Page(browser, html)
    pg = page.ready()
    last = str(payload["slices"][-1]["rank"])
    chip = pg.locator(f"#slice-table tr[data-rank='{last}'] .chip", has_text="support device")
    assert chip.count() == 1
    pg.fill("#filter-term", "support dev")
    shown = [r["rank"] for r in page.slice_rows() if not r["hidden"]]
    assert shown == [last]
    pg.click(f"#slice-table tr[data-rank='{last}'] a")
    assert "concept(support device) = positive" in (pg.locator(f"#slice-{last} .rule").text_content() or "")
    assert pg.locator(f"#slice-{last} .chip", has_text="<script>").count() == 1  # a chip, as text
    marks = pg.locator(f"#slice-{last} .member p.report mark").all_text_contents()
    n_cards = pg.locator(f"#slice-{last} .member").count()
    assert n_cards and sum(m.endswith("No pneumothorax.") for m in marks) == n_cards  # findings sentence
    assert pg.title() == "medaudit audit report" and page.clean(), page.console
    page.page.close()


def test_csp_blocks_a_script_whose_hash_is_not_listed(
    browser: Any, audit: AuditResult, tmp_path: Path
) -> None:
    """The policy is enforced: a changed inline script is refused and reported on the console."""
    raw = audit.paths["report"].read_text(encoding="utf-8")
    tampered = raw.replace('"use strict";', '"use strict"; ', 1)
    assert tampered != raw
    html = tmp_path / "tampered.html"
    html.write_text(tampered, encoding="utf-8")
    page = Page(browser, html)
    page.page.wait_for_timeout(500)
    assert page.page.get_attribute("body", "data-ready") is None
    assert any("Content Security Policy" in m for m in page.console), page.console
    page.page.close()
