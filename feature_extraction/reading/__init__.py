"""Reading slides: opening a slide file (:mod:`.slides`), the direct reader of tiled JPEG
pyramids (:mod:`.direct`, :mod:`.direct_batch`, :mod:`.dct_scale`), the loader items that read
blocks of tiles (:mod:`.loader`) and the choice between OpenSlide and the direct reader
(:mod:`.reader_choice`)."""
