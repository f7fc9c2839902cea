"""Statistics and the report: survival analysis, discrimination, nomogram, figures."""
