"""Data: feature files (ours and the peers'), cohort tables, patient bags and the in-memory cache."""
