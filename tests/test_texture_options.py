"""The CLI's named choices (medaudit.texture.options) equal the registries that own the behaviour."""

from __future__ import annotations

from medaudit.texture import options


def test_enums_match_the_registries():
    from medaudit.texture.preprocess import INPUT_NORMS
    from medaudit.texture.recipes import RECIPES
    from medaudit.texture.train import MODES

    assert [e.value for e in options.RecipeName] == list(RECIPES)
    assert [e.value for e in options.InputNorm] == list(INPUT_NORMS)
    assert [e.value for e in options.TrainMode] == list(MODES)


def test_data_sources_are_the_readers(tmp_path):
    from medaudit.data import mri
    from medaudit.studies.texture_robustness.config import DataModel

    assert DataModel.model_fields["source"].annotation is options.DataSource
    assert all(
        hasattr(mri, f) for f in ("read_dhcp", "read_nifti_folder", "read_csv_pairs", "build_mni_phantom")
    )
