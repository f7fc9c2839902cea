"""Explanation from arrays: which tiles drive a patient's CRCRS, painted and exported.

Nothing here reads a slide or imports openslide or timm (that is :mod:`feature_extraction.explain`,
whose :func:`~feature_extraction.explain.heatmaps.make_heatmaps` runs the slide-level job);
matplotlib, scipy and captum are imported inside the functions that use them. In data-flow order:

- :mod:`~mil_crcrs.explain.scores`: a patient's per-tile attention and contributions from the
  ensemble (:func:`tile_scores`), and the top and bottom tiles (:func:`select_tiles`);
- :mod:`~mil_crcrs.explain.integrated_gradients`: feature-level integrated gradients of the CRCRS;
- :mod:`~mil_crcrs.explain.settings`: :class:`HeatmapSettings`, how maps are painted and which
  tiles are shown, and the value kinds a map can show;
- :mod:`~mil_crcrs.explain.tiling`: a feature file's tile geometry (tile edge in level-0 pixels,
  the user's :class:`TileSize` for files that record none);
- :mod:`~mil_crcrs.explain.paint`: array-level painting (normalise with a :class:`ValueScale`,
  paint at the tile coords, smooth, colour over a background);
- :mod:`~mil_crcrs.explain.render`: one slide's heatmap from its tiles (:func:`slide_heatmaps`);
- :mod:`~mil_crcrs.explain.figures`: a heatmap with its colorbar, and galleries of tiles;
- :mod:`~mil_crcrs.explain.geojson`: the tiles as QuPath GeoJSON.

How well the attention finds planted tiles is :mod:`mil_crcrs.attention_checks`.
"""
