"""The extraction run, :func:`.pipeline.extract` (the library side of ``crcrs extract``): its
settings (:mod:`.settings`), the per-slide plan (:mod:`.planning`) worked ahead of the encoder
(:mod:`.schedule`), the stream from loader to feature file (:mod:`.stream`), and what keeps a run
crash-safe and parallel: claims, failures and shards (:mod:`.claims`, :mod:`.failures`,
:mod:`.sharding`); :mod:`.result` is what a run returns."""
