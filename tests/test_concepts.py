"""Report concepts: lexicon validation, negation / uncertainty scopes, open-vocabulary n-grams."""

from __future__ import annotations

from pathlib import Path

import pytest

from medaudit.audit.concepts import default_lexicon, extract_concepts, load_lexicon, ngram_features
from medaudit.audit.explain import negate_text, phrase_ngrams
from medaudit.errors import InputError


def _code(text: str, concept: str) -> int:
    return int(extract_concepts([text]).loc[0, concept])


def test_negation_ends_at_but() -> None:
    text = "No pleural effusion, but small pneumothorax."
    assert _code(text, "pleural effusion") == -1
    assert _code(text, "pneumothorax") == 1


def test_negation_ends_at_sentence() -> None:
    text = "No pneumothorax. Left chest tube in place."
    assert _code(text, "pneumothorax") == -1
    assert _code(text, "tube") == 1 and _code(text, "support device") == 1


@pytest.mark.parametrize(
    "text",
    [
        "Findings may represent pneumonia.",
        "Possible left basilar pneumonia.",
        "Pneumonia cannot be excluded.",
    ],
)
def test_uncertain_is_a_third_state(text: str) -> None:
    assert _code(text, "pneumonia") == 2


def test_positive_wins_and_synonyms_group() -> None:
    df = extract_concepts(
        ["No pneumonia on the right. Left lower lobe pneumonia.", "Pacer leads intact.", ""]
    )
    assert df.loc[0, "pneumonia"] == 1
    assert df.loc[1, "pacemaker or leads"] == 1 and df.loc[1, "support device"] == 1
    assert (df.loc[2] == 0).all()
    assert str(df.dtypes.iloc[0]) == "int8"
    assert _code("Heart size is mildly enlarged.", "cardiomegaly") == 1
    assert _code("No acute cardiopulmonary abnormality.", "no finding") == 1


def test_default_lexicon_covers_issue_list() -> None:
    names = set(default_lexicon().names)
    chexpert = {
        "no finding", "enlarged cardiomediastinum", "cardiomegaly", "lung opacity", "lung lesion", "edema",
        "consolidation", "pneumonia", "atelectasis", "pneumothorax", "pleural effusion", "pleural other",
        "fracture", "support device",
    }  # fmt: skip
    kinds = {"tube", "line or catheter", "pacemaker or leads", "sternotomy wires or clips", "port"}
    technique = {"portable", "ap view", "lateral view", "rotated", "low lung volumes"}
    incidental = {"granuloma", "scoliosis", "degenerative change", "hiatal hernia", "emphysema", "nodule"}
    assert chexpert | kinds | technique | incidental <= names


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "lex.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("concepts:\n  - name: a\n    synonyms: [x]\n    colour: red\n", r"lex\.yaml.*unknown key 'colour'"),
        ("concepts:\n  - name: a\n    synonyms: []\n", r"lex\.yaml.*concept 'a'.*'synonyms'"),
        (
            "concepts:\n  - {name: a, synonyms: [x]}\n  - {name: a, synonyms: [y]}\n",
            r"lex\.yaml.*duplicate concept name 'a'",
        ),
        ("concepts: []\nextra: 1\n", r"lex\.yaml.*unknown key 'extra'"),
        ("concepts:\n  - {name: a, synonyms: [x], includes: [zz]}\n", r"lex\.yaml.*unknown concept 'zz'"),
        ("concepts:\n  - name: a\n    name: b\n    synonyms: [x]\n", r"lex\.yaml.*duplicate key 'name'"),
        ("concepts: [\n", r"lex\.yaml: not valid YAML"),
    ],
)
def test_lexicon_validation(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        load_lexicon(_write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_custom_lexicon(tmp_path: Path) -> None:
    lex = load_lexicon(
        _write(tmp_path, "concepts:\n  - name: pectus\n    synonyms: [pectus excavatum, pectus*]\n")
    )
    df = extract_concepts(["Pectus excavatum deformity.", "No pectus."], lex)
    assert list(df.columns) == ["pectus"] and df["pectus"].tolist() == [1, -1]


def test_placeholders_and_sentences_never_in_ngrams() -> None:
    grams = phrase_ngrams("Chest tube in XXXX place. No focal ___ consolidation", (1, 3))
    assert not any("xxxx" in g or g == "x" for g in grams)
    assert "tube place" not in grams  # the placeholder splits the phrase
    assert not any("place no" in g for g in grams)  # n-grams never cross a sentence
    assert "xxxx" not in negate_text("Seen on XXXX. XXXX XXXX")


def test_ngram_features_are_named_and_binary() -> None:
    df = ngram_features(["Pectus deformity. No effusion."] * 3 + ["Clear lungs."] * 3, min_df=2, max_df=1.0)
    assert 'report says "pectus deformity"' in df.columns
    assert 'report says "no_effusion"' in df.columns
    assert df['report says "pectus"'].sum() == 3


def test_exclude_and_resolution() -> None:
    assert _code("Considerations include pericardial effusion.", "pleural effusion") == 0
    assert _code("Small pericardial effusion and left pleural effusion.", "pleural effusion") == 1
    assert _code("Interval resolution of left effusion.", "pleural effusion") == -1
    assert _code("The left chest tube has been removed.", "tube") == -1


def test_redundant_ngrams_collapse() -> None:
    import numpy as np

    from medaudit.audit.explain import report_ngrams

    reports = ["Right chest tube in place."] * 10 + ["Lungs are clear."] * 10
    in_slice = np.arange(20) < 10
    ng = report_ngrams(reports, in_slice, ~in_slice, top_k=10)["ngram"].tolist()
    tube_grams = [g for g in ng if "tube" in g.split()]
    assert len(tube_grams) == 1  # "tube", "chest tube", "right chest tube" ... are one feature


@pytest.mark.parametrize(
    ("text", "concept", "code"),
    [
        ("Metallic foreign body projects over the left upper quadrant.", "foreign body", 1),
        ("Nipple piercings noted.", "foreign body", 1),
        ("Exaggerated thoracic kyphosis.", "kyphosis", 1),
        ("No kyphosis.", "kyphosis", -1),
        ("Elevated right hemidiaphragm.", "elevated hemidiaphragm", 1),
        ("The diaphragms are flattened.", "flattened diaphragm", 1),
        ("Calcified granuloma in the right upper lobe.", "calcification", 0),
        ("Aortic calcification.", "calcification", 1),
        ("Study limited by patient motion.", "limited technique", 1),
        ("Blunting of the left costophrenic angle.", "costophrenic blunting", 1),
        ("Postsurgical changes of spinal fusion.", "spinal fusion or hardware", 1),
        ("Increased interstitial markings.", "prominent lung markings", 1),
        ("Anterior wedging of a midthoracic vertebral body.", "vertebral deformity", 1),
        ("Scarring in the left lung base.", "scarring", 1),
    ],
)
def test_frequent_openi_headings_have_concepts(text: str, concept: str, code: int) -> None:
    """Open-i's frequent MeSH major headings that the first lexicon missed (docs/concepts.md)."""
    assert _code(text, concept) == code
