"""Dates and large numbers in metadata: a period of time, or a scanner setting in the thousands, can
define a rule slice (before: dates were one category per day, and every cut point of a year column was
named and applied as ``2.01e+03``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medaudit.audit.meta_values import dates_as_years, decimal_year
from medaudit.audit.pipeline import run_audit
from medaudit.audit.predicates import metadata_predicates
from test_audit_e2e import make_cases
from test_rule_audit import _cfg


def test_decimal_year_is_linear_in_time() -> None:
    t = pd.Series(
        pd.to_datetime(["2011-01-01", "2011-07-02 12:00", "2012-12-31 12:00", None], format="ISO8601")
    )
    y = decimal_year(t).to_numpy()
    assert y[0] == 2011.0 and abs(y[1] - 2011.5) < 1e-3 and abs(y[2] - (2012 + 365.5 / 366)) < 1e-9
    assert np.isnan(y[3])


def test_iso_dates_of_every_form_become_decimal_years() -> None:
    meta = pd.DataFrame(
        {
            "study_date": ["2011-03-28", "2011/03/29", None, " 2012-01-01 "],
            "acquired": [
                "2011-03-28T09:06:50",
                "2011-03-28 10:00",
                "2011-03-28T09:06:50Z",
                "2011-03-28T11:06:50+02:00",
            ],
            "when": pd.to_datetime(["2010-01-01", "2010-07-02 12:00", None, "2011-01-01"], format="ISO8601"),
            "site": ["A", "B", "A", "B"],
            "us_date": ["03/28/2011", "03/29/2011", "04/01/2011", "05/01/2011"],
        }
    )
    out = dates_as_years(meta, "cases.csv")
    assert out["study_date"].dtype == np.float64 and np.isnan(out["study_date"][2])
    assert out["study_date"][0] == pytest.approx(2011 + 86 / 365) and out["study_date"][3] == 2012.0
    assert out["acquired"][2] == pytest.approx(out["acquired"][3])  # the zone is honoured
    assert out["when"][1] == pytest.approx(2010.5, abs=1e-3)
    assert list(out["site"]) == ["A", "B", "A", "B"] and list(out["us_date"]) == list(meta["us_date"])


def test_a_date_column_with_an_impossible_day_stays_text_with_one_warning() -> None:
    meta = pd.DataFrame({"study_date": ["2011-03-28", "2011-02-30", "2012-01-01"]})
    with pytest.warns(
        UserWarning, match=r"cases\.csv: column 'study_date' holds dates, but row 2 \('2011-02-30'\)"
    ):
        out = dates_as_years(meta, "cases.csv")
    assert list(out["study_date"]) == list(meta["study_date"])


def test_cut_points_of_large_numbers_keep_their_values() -> None:
    rng = np.random.default_rng(0)
    meta = pd.DataFrame({"year": rng.integers(2004, 2016, 400), "kvp_uas": rng.integers(1800, 3000, 400)})
    p = metadata_predicates(meta)
    years = sorted({int(k.split()[-1]) for k in p if k.startswith("year")})
    assert len(years) >= 4 and all(2004 < y < 2016 for y in years), years
    assert all("e+" not in k for k in p)
    for name, mask in p.items():  # the name is the threshold applied
        col, op, value = name.split()
        v = meta[col].to_numpy()
        assert (mask == (v < float(value) if op == "<" else v >= float(value))).all()


def test_a_failure_that_starts_on_a_date_is_found_and_named(tmp_path: Path) -> None:
    folder = tmp_path / "cases"
    df, _ = make_cases(folder, n=300, images=False, seed=3)
    rng = np.random.default_rng(3)
    days = rng.integers(0, 6 * 365, len(df))
    df["study_date"] = (pd.Timestamp("2008-01-01") + pd.to_timedelta(days, "D")).strftime("%Y-%m-%d")
    late = days >= 4 * 365 + 150  # a new protocol from late May 2012 on: the classifier fails there
    df["score"] = np.where(late, np.where(df["truth"] == 1, 0.2, 0.8), np.where(df["truth"] == 1, 0.8, 0.2))
    flip = rng.random(len(df)) < 0.08
    df.loc[flip, "score"] = 1.0 - df.loc[flip, "score"]
    res = run_audit(df, _cfg(folder, slicer="rules", meta=["sex", "age", "study_date"]), tmp_path / "out")
    rule = " ∧ ".join(res.slices[0]["explanation"]["rule"]["rule"])
    assert "study_date >= 2012." in rule, rule
    members = set(res.slices[0]["member_ids"])
    assert len(members & set(df["case"][late])) / len(members) >= 0.9


def test_dicom_age_strings_become_years_and_give_age_cut_points(tmp_path: Path) -> None:
    from medaudit.audit.table import load_case_table

    rng = np.random.default_rng(1)
    ages = rng.integers(20, 90, 120)
    units = ["Y"] * 118 + ["M", "W"]
    df = pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(120)],
            "label": rng.integers(0, 2, 120),
            "prob": rng.random(120),
            "report": ["Normal chest."] * 120,
            "PatientAge": [f"{a:03d}{u}" for a, u in zip(ages, units, strict=True)],
        }
    )
    df.loc[5, "PatientAge"] = None
    (tmp_path / "t.csv").write_text(df.to_csv(index=False))
    t = load_case_table(tmp_path / "t.csv", meta=["PatientAge"], require=("report",))
    age = t.meta["PatientAge"].to_numpy()
    assert age[0] == ages[0] and np.isnan(age[5])
    assert age[118] == pytest.approx(ages[118] / 12) and age[119] == pytest.approx(ages[119] * 7 / 365.25)
    names = list(metadata_predicates(t.meta))
    assert any(n.startswith("PatientAge >= ") for n in names) and not any(" = " in n for n in names), names


def test_a_value_holding_the_rules_and_is_quoted_in_its_predicate() -> None:
    meta = pd.DataFrame({"site": ["A ∧ label = 0", "B", " C", "B"] * 5, "ok": ["x", "y", "x", "y"] * 5})
    names = set(metadata_predicates(meta))
    assert {'site = "A ∧ label = 0"', "site = B", 'site = " C"', "ok = x", "ok = y"} <= names, names


def test_a_concept_name_holding_the_rules_and_is_refused(tmp_path: Path) -> None:
    from medaudit.audit.concepts.lexicon import load_lexicon
    from medaudit.errors import InputError

    f = tmp_path / "lex.yaml"
    f.write_text("concepts:\n  - name: 'tube ∧ label = 0'\n    synonyms: [tube]\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"lex\.yaml: concept 'tube ∧ label = 0': key 'name' holds '∧'"):
        load_lexicon(f)
