"""Explanation that needs slides or the encoder: the slide-level heatmap job and Grad-CAM.

- :mod:`~feature_extraction.explain.heatmaps`: :func:`make_heatmaps` and its settings,
  :class:`HeatmapJob` (the library side of ``crcrs heatmap``);
- :mod:`~feature_extraction.explain.patient`: one patient's files (maps, galleries, Grad-CAM,
  GeoJSON);
- :mod:`~feature_extraction.explain.pixels`: thumbnails and tiles read from the slide files as
  extraction read them;
- :mod:`~feature_extraction.explain.encoder`: the encoder that made the features, rebuilt and
  checked to reproduce them;
- :mod:`~feature_extraction.explain.gradcam`: Grad-CAM through the encoder and its settings,
  :class:`GradCAMSettings`.

The arrays are painted by :mod:`mil_crcrs.explain`.
"""
