"""Side, site and severity qualifiers of concept mentions: ``atelectasis (left)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medaudit.audit.concepts import default_lexicon, extract_concepts, load_lexicon
from medaudit.audit.predicates import build_predicates, predicate_group
from medaudit.audit.rule_audit import report_concepts
from medaudit.errors import InputError


def _quals(text: str) -> set[str]:
    df = extract_concepts([text], qualified=True)
    n = len(default_lexicon())
    return {c for c in df.columns[n:] if df.loc[0, c] == 1}


def test_qualifiers_before_inside_and_after_a_mention() -> None:
    assert {"atelectasis (left)", "atelectasis (base)", "atelectasis (mild)"} <= _quals(
        "Mild left basilar atelectasis."
    )
    assert {"atelectasis (left)", "atelectasis (base)"} <= _quals("Atelectasis at the left lung base.")
    assert "cardiomegaly (mild)" in _quals("The heart size is mildly enlarged.")  # inside "heart ~ enlarged"
    assert "elevated hemidiaphragm (right)" in _quals("The right hemidiaphragm is elevated.")


def test_qualifiers_stay_in_their_clause() -> None:
    got = _quals("Left base atelectasis and right upper lobe granuloma.")
    assert {"atelectasis (left)", "granuloma (right)", "granuloma (apex)"} <= got
    assert "atelectasis (right)" not in got and "granuloma (left)" not in got
    # a sentence end, and a negated clause, stop the window
    got = _quals("Right pleural effusion. Atelectasis is seen.")
    assert "atelectasis (right)" not in got and "pleural effusion (right)" in got
    got = _quals("Atelectasis without right pleural effusion.")
    assert "atelectasis (right)" not in got


def test_negated_mentions_take_no_qualifier_and_hedged_ones_stay_uncertain() -> None:
    assert not _quals("No left pleural effusion.")
    df = extract_concepts(["No left pleural effusion."], qualified=True)
    assert df.loc[0, "pleural effusion"] == -1
    df = extract_concepts(
        ["Possible left lower lobe pneumonia.", "Left pneumonia. Possible right pneumonia."], qualified=True
    )
    assert df.loc[0, "pneumonia (left)"] == 2 and df.loc[0, "pneumonia (base)"] == 2
    assert df.loc[1, "pneumonia (left)"] == 1 and df.loc[1, "pneumonia (right)"] == 2


def test_one_clause_shares_its_qualifiers() -> None:
    got = _quals("Left basilar opacity, likely atelectasis.")
    assert {"lung opacity (left)", "atelectasis (left)", "atelectasis (base)"} <= got


def test_anatomical_sites_qualify_findings_outside_the_lung() -> None:
    assert "calcification (aorta)" in _quals("Aortic calcification is noted.")
    got = _quals("Small T-spine osteophytes.")  # "t-spine" is two tokens: t, spine
    assert {
        "degenerative change (thoracic)",
        "degenerative change (spine)",
        "degenerative change (mild)",
    } <= got
    assert "degenerative change (lumbar)" not in got
    got = _quals("Calcified right hilar lymph nodes.")
    assert {"calcification (right)", "calcification (hilar)", "calcification (lymph node)"} <= got
    assert "sternotomy wires or clips (mediastinum)" in _quals("Surgical clips overlying the mediastinum.")
    # a site in a negated sentence qualifies nothing, and a site never crosses into the next sentence
    got = _quals("No mediastinal widening. Calcified granuloma.")
    assert "granuloma (mediastinum)" not in got and "calcification (mediastinum)" not in got


def test_umbrella_concept_takes_its_parts_qualifiers() -> None:
    got = _quals("Left chest tube in place.")
    assert "tube (left)" in got and "support device (left)" in got


def test_unqualified_extraction_is_unchanged() -> None:
    texts = ["Mild left basilar atelectasis.", "No effusion.", "", None]
    plain = extract_concepts(texts)
    qual = extract_concepts(texts, qualified=True)
    assert list(plain.columns) == default_lexicon().names
    pd.testing.assert_frame_equal(qual[plain.columns], plain)
    assert set(np.unique(qual.iloc[:, len(plain.columns) :].to_numpy())) <= {0, 1, 2}


def test_qualified_predicates_read_as_concepts() -> None:
    codes = extract_concepts(["Mild left basilar atelectasis."] * 3 + ["Normal chest."] * 3, qualified=True)
    preds = build_predicates(codes)
    assert "report mentions atelectasis (left)" in preds.columns
    assert predicate_group("report mentions atelectasis (left)") == "concept"
    assert "report denies atelectasis (left)" not in preds.columns  # a negated mention has no qualifier


def test_report_concepts_keeps_qualifiers_with_support() -> None:
    reports = ["Left base atelectasis."] * 12 + ["Right apical granuloma."] * 3 + ["Normal chest."] * 5
    codes, msg = report_concepts(reports, qualified=True, min_reports=10)
    assert msg is None
    assert "atelectasis (left)" in codes.columns and "granuloma (right)" not in codes.columns
    codes, _ = report_concepts(reports)
    assert "atelectasis (left)" not in codes.columns


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "lex.yaml"
    p.write_text(text)
    return p


def test_custom_lexicon_qualifiers(tmp_path: Path) -> None:
    lex = load_lexicon(
        _write(
            tmp_path,
            "concepts:\n  - {name: nodule, synonyms: [nodul*]}\n"
            "qualifiers:\n  - {name: calcified, words: [calcif*], group: kind}\n",
        )
    )
    df = extract_concepts(["Calcified nodule.", "Nodule."], lex, qualified=True)
    assert list(df.columns) == ["nodule", "nodule (calcified)"]
    assert df["nodule (calcified)"].tolist() == [1, 0]
    # a lexicon without qualifiers gives no qualified columns
    lex2 = load_lexicon(_write(tmp_path, "concepts:\n  - {name: nodule, synonyms: [nodul*]}\n"))
    assert list(extract_concepts(["Left nodule."], lex2, qualified=True).columns) == ["nodule"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("qualifiers: {left: [left]}\n", r"lex\.yaml: key 'qualifiers' must be a list"),
        ("qualifiers:\n  - {name: left}\n", r"lex\.yaml: qualifier 'left': key 'words' is missing"),
        ("qualifiers:\n  - {name: left, words: [left side]}\n", r"qualifier 'left'.*must be one word"),
        (
            "qualifiers:\n  - {name: l, words: [x]}\n  - {name: l, words: [y]}\n",
            r"duplicate qualifier name 'l'",
        ),
        ("qualifiers:\n  - {name: l, words: [x], side: 1}\n", r"qualifier 'l': unknown key 'side'"),
        ("qualifiers:\n  - left\n", r"qualifiers\[0\] must be a mapping"),
        (
            "  - {name: a (left), synonyms: [y]}\nqualifiers:\n  - {name: left, words: [left]}\n",
            r"concept 'a \(left\)' has the name of concept 'a' qualified by 'left'",
        ),
    ],
)
def test_qualifier_validation(tmp_path: Path, text: str, match: str) -> None:
    body = "concepts:\n  - {name: a, synonyms: [x]}\n" + text
    with pytest.raises(InputError, match=match) as info:
        load_lexicon(_write(tmp_path, body))
    assert "\n" not in str(info.value)


def test_a_synonym_that_is_a_negation_trigger_stays_affirmed() -> None:
    """ "excluded" is a NegEx trigger and a `limited technique` synonym: the trigger blocks a qualifier
    window, but the mention itself stays affirmed, with or without qualifiers (as before them)."""
    text = "The costophrenic angles are excluded from the image."
    for qualified in (False, True):
        assert extract_concepts([text], qualified=qualified).loc[0, "limited technique"] == 1
