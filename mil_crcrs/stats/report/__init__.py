"""The survival report (``crcrs report``): :func:`.build.build_report` with its settings
(:mod:`.settings`), the patients and predictions it reads (:mod:`.inputs`), per-cohort numbers
(:mod:`.cohorts`), the sections (:mod:`.sections`; :mod:`.associate`, the omics section read from
an associate folder) and the self-contained HTML (:mod:`.html`)."""
