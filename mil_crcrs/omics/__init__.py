"""What goes with a high CRCRS: mutations, copy number, expression, gene sets, any table.

- :mod:`.readers`: cBioPortal study folders, MAFs, expression matrices, GMT files, tables;
- :mod:`.barcodes`: samples to patients (TCGA barcodes, cBioPortal sample tables);
- :mod:`.inputs`: the scores and the omics files keyed by scored patient;
- :mod:`.mutations`, :mod:`.cna`, :mod:`.expression`, :mod:`.gsea`, :mod:`.tables`: the tests;
- :mod:`.figures`: oncoprint, volcano, enrichment and box plots;
- :mod:`.run`: :func:`associate` runs them and writes one folder.
"""

from mil_crcrs.omics.run import AssociateResult, AssociateSettings, associate

__all__ = ["AssociateResult", "AssociateSettings", "associate"]
