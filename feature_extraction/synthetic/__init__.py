"""Synthetic slides and the offline demo built on them."""
