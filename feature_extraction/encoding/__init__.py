"""Tiles to features: the encoder and what the files record of it (:mod:`.tile_encoder`), its
weights (:mod:`.weights`), the encoder registry (:mod:`.encoders`), foundation models from the
hub (:mod:`.foundation_models`) and the batched runner (:mod:`.runner`)."""
