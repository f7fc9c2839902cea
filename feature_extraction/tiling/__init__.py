"""Where the tiles are: the tissue mask (:mod:`.tissue`), the tile grid at a target resolution
and its loader items (:mod:`.grid`), and grids from given coordinate files
(:mod:`.given_coords`)."""
