"""Chest X-ray dataset readers. Each returns the audit case table (see :mod:`medaudit.data.cxr.common`).

* :func:`read_mimic_cxr` (MIMIC-CXR-JPG 2.x + MIMIC-CXR reports)
* :func:`read_chexpert` (CheXpert train.csv / valid.csv)
* :func:`read_nih` (NIH ChestX-ray14)
* :func:`read_openi` (Open-i / Indiana; reports and DICOM metadata also from torchxrayvision's copies)

Pass ``target=`` to any reader to add the binary ``label`` column of one audited finding.
"""

from medaudit.data.cxr.chexpert import read_chexpert
from medaudit.data.cxr.common import CHEXPERT_LABELS, select_target
from medaudit.data.cxr.mimic import read_mimic_cxr
from medaudit.data.cxr.nih import read_nih
from medaudit.data.cxr.openi import load_openi_dicom_metadata, load_openi_reports, read_openi

__all__ = [
    "CHEXPERT_LABELS",
    "load_openi_dicom_metadata",
    "load_openi_reports",
    "read_chexpert",
    "read_mimic_cxr",
    "read_nih",
    "read_openi",
    "select_target",
]
