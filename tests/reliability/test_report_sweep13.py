"""A thirteenth sweep, of what a user reads: ``report.html``, the notebook API, a user's concept lexicon
and ``slices.json`` / ``membership.parquet`` read back. Each case failed before its fix, except the
browser guard, which drives hostile text through every string the page shows in headless Chromium."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from medaudit.audit.concepts import extract_concepts, load_lexicon, parse_lexicon
from medaudit.audit.outputs import read_membership, read_slices_json, write_slices_json
from medaudit.audit.result import result_html
from medaudit.errors import InputError

from .conftest import SRC, make_table, refused

# -- the concept lexicon ------------------------------------------------------------------------------


def _lexicon(path: Path, name: str = "edema", group: str = "", synonym: str = "edema") -> Path:
    """A lexicon whose first concept has ``name``, ``group`` and ``synonym`` written as YAML escapes
    (double quotes), so that an unpaired surrogate or a control character reaches the parser."""
    esc = lambda s: "".join(c if " " <= c <= "~" else f"\\u{ord(c):04x}" for c in s)  # noqa: E731
    text = f'concepts:\n  - name: "{esc(name)}"\n    synonyms: ["{esc(synonym)}"]\n'
    text += f'    group: "{esc(group)}"\n' if group else ""
    path.write_text(text + "  - {name: nodule, synonyms: [nodule]}\n", encoding="ascii")
    return path


@pytest.mark.parametrize(
    ("name", "group", "key", "shown"),
    [
        ("edema \ud800", "", "key 'name'", "\\ud800"),  # was exit 1 after the audit: report.html unwritable
        ("edema \u202e", "", "key 'name'", "\\u202e"),  # a right-to-left override in every rule's text
        ("edema \x00", "", "key 'name'", "\\x00"),
        ("edema", "dev\udfff", "key 'group'", "\\udfff"),
    ],
)
def test_lexicon_text_that_is_not_plain_text_is_one_line_before_any_work(
    cli, audit_args, tmp_path: Path, name: str, group: str, key: str, shown: str
) -> None:
    table = make_table(tmp_path / "data")
    lex = _lexicon(tmp_path / "lex.yaml", name=name, group=group)
    out = tmp_path / "out"
    line = refused(cli, audit_args(table, out, "--concepts", lex, report=True), [tmp_path], str(lex), key)
    assert shown in line and not out.exists()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("chest tube", "chest tube\u200b"),  # a zero-width space: two rules that read the same
        ("tube", "\uff34\uff35\uff22\uff25"),  # full-width letters
        ("straße", "STRASSE"),  # case folding, not just lower()
        ("pleural effusion", "pleu\u00adral effusion"),  # a soft hyphen (invisible)
    ],
)
def test_lexicon_names_that_only_look_different_are_duplicates(first: str, second: str) -> None:
    data = {"concepts": [{"name": first, "synonyms": ["a"]}, {"name": second, "synonyms": ["b"]}]}
    with pytest.raises(InputError, match=r"duplicate concept name .* reads as"):
        parse_lexicon(data, "lex.yaml")


def test_lexicon_name_of_invisible_characters_only_is_refused() -> None:
    data = {"concepts": [{"name": "\u200b\u00ad", "synonyms": ["a"]}]}
    with pytest.raises(InputError, match=r"lex.yaml: concepts\[0\]: key 'name' .* has no visible character"):
        parse_lexicon(data, "lex.yaml")


def test_lexicon_adjacent_gaps_match_as_one_without_exponential_backtracking() -> None:
    """``~ ~ ... ~ zzz yyy`` (16 gaps in a row) on a sentence holding ``zzz`` but not the phrase: one
    regular expression per gap backtracked exponentially from every word (12 gaps: 1.6 s per report, 13:
    8 s, 16: about 15 minutes).
    Run in a subprocess so that the old behaviour fails by its timeout instead of hanging the suite."""
    code = (
        "from medaudit.audit.concepts import parse_lexicon, extract_concepts\n"
        "lex = parse_lexicon({'concepts': [{'name': 'a', 'synonyms': ['~ ' * 16 + 'zzz yyy']}]})\n"
        "print(int(extract_concepts(['zzz ' + 'w ' * 40 + '.'], lexicon=lex)['a'].sum()))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("concept extraction with 16 adjacent '~' did not finish in 60 s")
    assert out.returncode == 0 and out.stdout.strip() == "0", out.stderr
    # the same meaning as before: k adjacent gaps stand for up to 2k words
    lex = parse_lexicon({"concepts": [{"name": "big", "synonyms": ["heart ~ ~ enlarged"]}]})
    codes = extract_concepts(["Heart is very mildly enlarged.", "Heart a b c d e enlarged."], lexicon=lex)
    assert codes["big"].tolist() == [1, 0]


def test_lexicon_phrase_with_too_many_gaps_is_refused_naming_the_item() -> None:
    """Gaps separated by words backtrack the same way (12 gaps: 3.5 s on a 60-word sentence)."""
    syn = " ".join(["w ~"] * 5) + " zzz"
    data = {"concepts": [{"name": "a", "synonyms": ["ok", syn]}]}
    with pytest.raises(InputError, match=r"lex.yaml: concept 'a': key 'synonyms' item 2 has 5 '~' gaps"):
        parse_lexicon(data, "lex.yaml")
    parse_lexicon({"concepts": [{"name": "a", "synonyms": [" ".join(["w ~"] * 4) + " zzz"]}]})


def test_lexicon_file_over_the_config_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lexicon was read whole whatever its size (a 12 MB one took minutes to parse before being refused);
    it now has the 16 MiB limit of every config file (lowered here to keep the test small)."""
    import medaudit.configfile as configfile

    monkeypatch.setattr(configfile, "MAX_CONFIG_BYTES", 4096)
    lex = tmp_path / "lex.yaml"
    lex.write_text(
        yaml.safe_dump({"concepts": [{"name": f"c{i}", "synonyms": [f"w{i}"]} for i in range(200)]})
    )
    with pytest.raises(InputError, match=r"lex.yaml: not a lexicon file: [\d,]+ bytes, more than 4,096"):
        load_lexicon(lex)


# -- slices.json and membership.parquet read back ---------------------------------------------------------


def _payload() -> dict[str, Any]:
    return {
        "config": {"seed": 0},
        "counts": {"cases": 2},
        "slices": [
            {
                "rank": 1,
                "size": 1,
                "error_rate": 1.0,
                "error_ci": [0.2, 1.0],
                "explanation": {"ngrams": [], "metadata": []},
                "member_ids": ["a"],
            }
        ],
    }


def _edit(path: Path, **change: Any) -> None:
    data = json.loads(path.read_text())
    for key, value in change.items():
        if key.startswith("slice_"):
            data["slices"][0][key[6:]] = value
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p.write_bytes(b'{"schema_version": "1.1", "x": "caf\xe9"}'), "not a readable JSON file"),
        (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "not a readable JSON file"),
        (
            lambda p: p.write_text(p.read_text().replace('"rank": 1', '"rank": ' + "9" * 5000)),
            "not a readable",
        ),
        (lambda p: _edit(p, slices={"1": {}}), "key 'slices' must be a list, not an object"),
        (lambda p: _edit(p, slices=None), "key 'slices' must be a list, not null"),
        (
            lambda p: _edit(p, slices=["rank size error_rate error_ci explanation member_ids"]),
            "slice 1 must be",
        ),
        (lambda p: _edit(p, slices=[7]), "slice 1 must be an object, not a number"),
        (lambda p: _edit(p, slice_rank="one"), "slice 1: key 'rank' must be a whole number"),
        (lambda p: _edit(p, slice_member_ids="a"), "slice 1: key 'member_ids' must be a list"),
        (lambda p: p.write_text(p.read_text().replace("{", '{"config": {}, ', 1)), "duplicate key 'config'"),
    ],
    ids=["latin1", "deep", "long-number", "dict", "null", "string-slice", "int-slice", "rank", "ids", "dup"],
)
def test_slices_json_edited_by_hand_is_one_line_naming_the_file(
    tmp_path: Path, edit: Any, expected: str
) -> None:
    p = tmp_path / "slices.json"
    write_slices_json(p, _payload())
    edit(p)
    with pytest.raises(InputError) as err:
        read_slices_json(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: ") and expected in msg and "\n" not in msg


@pytest.mark.parametrize("cut", [0, 5, 300])
def test_membership_parquet_truncated_is_one_line_naming_the_file(tmp_path: Path, cut: int) -> None:
    p = tmp_path / "membership.parquet"
    pd.DataFrame({"id": ["a", "b"], "slice_1": [0.9, 0.1]}).to_parquet(p, index=False)
    p.write_bytes(p.read_bytes()[:cut])
    with pytest.raises(InputError, match=r"membership.parquet: not a readable Parquet file") as err:
        read_membership(p)
    assert "\n" not in str(err.value)


# -- the notebook view --------------------------------------------------------------------------------


def test_repr_html_shows_control_and_bidi_characters_as_marks() -> None:
    """report.html showed them as ``[U+XXXX]``; the notebook table printed them raw, so a metadata value
    with a right-to-left override reordered the row it was in."""
    s = {
        "rank": 1,
        "size": 2,
        "error_rate": 0.5,
        "error_ci": [0.1, 0.9],
        "explanation": {"ngrams": [], "metadata": [{"column": "site", "value": "A\u202eB\x1b[2J<b>"}]},
        "member_ids": ["a", "b"],
        "rule": "site = A\u202eB",
    }
    result = SimpleNamespace(
        counts={"cases": 2, "errors": 1, "error_rate": 0.5}, slices=[s], out_dir="o\u2066ut"
    )
    page = result_html(result)
    assert "[U+202E]" in page and "[U+001B]" in page and "[U+2066]" in page and "&lt;b&gt;" in page
    assert not any(ch in page for ch in "\u202e\x1b\u2066")


# -- report.html ----------------------------------------------------------------------------------------

X = "<img src=x onerror=\"document.title='XSS'\">"
S = "</script><script>document.title='XSS2';alert(1)</script><!-- ]]> \u2028\u2029 </style>"
EMOJI = "\U0001f600\U0001d4d0"  # two characters beyond U+FFFF: four UTF-16 code units


@pytest.fixture(scope="module")
def hostile_audit(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A rule audit whose ids, metadata column and values, report text and concept names all carry
    HTML/JavaScript payloads, and whose reports hold characters beyond U+FFFF before the slice's words."""
    from medaudit.audit.pipeline import AuditConfig, run_audit

    root = tmp_path_factory.mktemp("hostile")
    rows = []
    for i in range(90):
        tube = i % 3 == 0
        label = i % 2
        pred = 1 - label if (tube and i % 4 != 1) else label
        words = "chest tube seen" if tube else "no acute disease"
        # a search hit 80 code units after an emoji's second half, and one after letters that
        # lower-case to two units ("İ"): the snippet's cut and the hit's mark must fit the text
        tail = {1: " \U0001f600" + "y" * 79 + "kidney.", 2: " \u0130\u0130\u0130\u0130 kidney stone."}.get(
            i, ""
        )
        rows.append(
            {
                "id": f"c{i}{X if i % 2 else S}",
                "label": label,
                "prob": 0.8 if pred else 0.2,
                "report": f"{EMOJI} Finding {X}. {S} {EMOJI} {words}. \x01\u202e end.{tail}",
                f"site{X}": X if tube else S,
            }
        )
    table = root / "cases.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    lex = root / "lex.yaml"
    concepts = [
        {"name": f"tube {X}", "synonyms": ["chest tube"]},
        {"name": f"acute {S}", "synonyms": ["acute"]},
    ]
    lex.write_text(yaml.safe_dump({"concepts": concepts}, allow_unicode=True), encoding="utf-8")
    cfg = AuditConfig(
        meta=[f"site{X}"],
        modalities=("report", "metadata"),
        slicer="rules",
        n_slices=3,
        concepts=lex,
        cache_dir=root / "cache",
    )
    return run_audit(str(table), cfg, root / "out")


def test_highlight_spans_are_utf16_offsets_as_the_browser_slices_text(hostile_audit: Any) -> None:
    """JavaScript strings count UTF-16 code units: a span in characters began a character early for each
    emoji before it (the highlight cut a surrogate pair in two and left the sentence's end unmarked)."""
    from medaudit.report.slice_browser import browser_data

    res = hostile_audit
    scores = res.membership.drop(columns="id").to_numpy(dtype=np.float64)
    data = browser_data(res.payload, res.table, scores)
    texts = {r[0]: r[1] for r in data["reports"]}
    marked = [
        texts[p].encode("utf-16-le")[2 * a : 2 * b].decode("utf-16-le")  # as JavaScript's slice(a, b)
        for s in data["slices"]
        for p, spans in s["marks"]
        for a, b in spans
    ]
    assert marked and all(m == f"</style> {EMOJI} chest tube seen." for m in marked), marked[:3]


CHROMIUM = Path("/usr/bin/chromium")
_HAVE = CHROMIUM.exists() and importlib.util.find_spec("playwright") is not None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not _HAVE and os.environ.get("MEDAUDIT_REQUIRE_BROWSER") != "1":
        pytest.skip("needs /usr/bin/chromium and playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


@pytest.mark.browser
def test_hostile_text_everywhere_stays_text_in_chromium(browser: Any, hostile_audit: Any) -> None:
    """Guard (sound before this sweep except the highlight): no payload runs or becomes an element, from
    case ids, a metadata column name and values, report text, concept names in rules and chips, or the
    n-grams; the page loads offline with its hash-based CSP; the findings sentence is marked whole."""
    html = hostile_audit.paths["report"].read_text(encoding="utf-8")
    csp = html.split('http-equiv="Content-Security-Policy" content="', 1)[1].split('"', 1)[0]
    assert "'unsafe-inline'" not in csp and "script-src 'sha256-" in csp and "default-src 'none'" in csp
    page = browser.new_page()
    log: list[str] = []
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(hostile_audit.paths["report"].as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=15000)
    rule = next(s for s in hostile_audit.slices if "tube" in s["explanation"]["rule"]["text"])
    page.click(f"#slice-table tr[data-rank='{rule['rank']}'] a")
    detail = page.locator(f"#slice-{rule['rank']}")
    assert f"tube {X}" in (detail.locator(".rule-block code").first.text_content() or "")
    card = detail.locator(".member").first
    assert (card.locator(".case-id").text_content() or "").startswith("c")
    assert X in (card.locator(".meta").text_content() or "") or S in (
        card.locator(".meta").text_content() or ""
    )
    assert card.locator("p.report mark").first.text_content() == f"</style> {EMOJI} chest tube seen."
    assert "[U+0001][U+202E]" in (card.locator("p.report").text_content() or "")
    page.fill("#search-box", "onerror")
    assert page.locator("#search-results li.hit").count() > 0
    page.fill("#search-box", "KIDNEY")
    assert page.locator("#search-results li.hit mark").all_text_contents() == ["kidney", "kidney"]
    lone = r"/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/"
    snippets = page.locator("#search-results .snippet")
    assert not snippets.evaluate_all(f"els => els.some(e => {lone}.test(e.textContent))")
    assert page.title() == "medaudit audit report" and not dialogs
    assert page.locator("script").count() == 2 and page.locator("img[src='x']").count() == 0
    assert not [m for m in log if m.startswith(("error", "pageerror"))], log
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    page.close()


def test_free_text_metadata_is_embedded_cut_like_the_reports() -> None:
    """Report text was cut at 3,000 characters per case, a metadata value not at all: a free-text
    column of 42 kB notes made a 63 MB report.html for 1,500 cases (419 kB now)."""
    from medaudit.report.slice_browser import BrowserLimits, browser_data

    n = 6
    df = pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(n)],
            "label": [0, 1] * 3,
            "pred": [1, 1] * 3,
            "prob": [0.9] * n,
            "report": ["Chest tube seen."] * n,
            "image": [None] * n,
        }
    )
    table = SimpleNamespace(df=df, meta=pd.DataFrame({"history": ["pain " * 10_000] * n, "age": [50] * n}))
    s = {"rank": 1, "member_ids": ["c0", "c2"], "exemplar_ids": ["c0"], "explanation": {"ngrams": []}}
    scores = np.where(np.arange(n) % 2 == 0, 0.9, 0.1)[:, None]
    data = browser_data({"slices": [s], "config": {}}, table, scores)
    assert len(json.dumps(data)) < 20_000  # was 300 kB: six copies of the 50 kB note
    limit = BrowserLimits().meta_chars
    values = [r[2] for r in data["reports"]]
    assert all(len(v[0]) == limit and v[0].endswith("…") and v[1] == 50 for v in values)


def test_members_keeps_a_metadata_column_named_like_a_score_column() -> None:
    """A metadata column named ``slice_1`` was overwritten by the membership scores in ``members()``:
    its values were gone without a word."""
    from medaudit.audit.result import slice_members

    df = pd.DataFrame(
        {"id": ["a", "b"], "label": [1, 0], "pred": [0, 0], "prob": [0.2, 0.1], "image": [None] * 2}
    )
    df["report"] = ["x.", "y."]
    meta = pd.DataFrame({"slice_1": ["AP", "PA"], "score": ["hi", "lo"], "meta_score": ["m1", "m2"]})
    s = {"rank": 1, "name": "slice_1", "member_ids": ["a"], "exemplar_ids": ["a"]}
    result = SimpleNamespace(
        slices=[s],
        table=SimpleNamespace(df=df, meta=meta),
        membership=pd.DataFrame({"id": ["a", "b"], "slice_1": [0.9, 0.1]}),
    )
    out = slice_members(result, 1)
    assert out["slice_1"].tolist() == [0.9] and out["score"].tolist() == [0.9]
    assert out["meta_slice_1"].tolist() == ["AP"]
    assert out["meta_score"].tolist() == ["hi"] and out["meta_meta_score"].tolist() == ["m1"]
