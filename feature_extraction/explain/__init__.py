"""Explanation that needs slides or the encoder: Grad-CAM and the slide-level heatmap job."""
