"""Explanation from arrays: tile scores, painted maps, figures and QuPath GeoJSON."""
