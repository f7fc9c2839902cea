"""``crcrs view``: a local web viewer of the slides with the model's maps (reads slide files).

- :mod:`.catalog`: where the scores come from (a model and feature files, or attention files);
- :mod:`.deepzoom`: deep-zoom tiles made on demand with OpenSlide's ``DeepZoomGenerator``;
- :mod:`.overlays`: a slide's tile scores, colour overlays and legends for the page;
- :mod:`.site`: every document the page loads, by relative URL;
- :mod:`.app`: the Flask server; :mod:`.export`: the same documents as a folder for ``file://``.

The page (``static/``) uses OpenSeadragon, vendored under ``static/openseadragon/``.
"""
