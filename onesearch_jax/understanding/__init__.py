"""Thought-augmented query understanding (OneSearch-V2, arXiv 2603.24422).

The offline pipeline that gives OneSearch-V2's teacher its "high-density keywords", in the paper's
three steps, learned from the training window of the search logs only:

1. intent, category and attribute extraction: :mod:`.lexicon` (the 18 attribute types,
   Aho-Corasick), :mod:`.spelling`, :mod:`.ontology`, :mod:`.analysis`, :mod:`.categories`;
2. keyword chain of thought: :mod:`.keywords` (candidates, fusion, the source protocol) with the
   sources in :mod:`.ontology`, :mod:`.mining`, :mod:`.categories`, :mod:`.analysis` and
   :mod:`.external` (keywords made elsewhere, e.g. by an LLM);
3. preference calibration: :mod:`.profiles`, :mod:`.calibrate`.

:mod:`.pipeline` wires them (:class:`~.pipeline.QueryUnderstanding`), :mod:`.repository` stores
the versioned keyword repository with its incremental refresh, :mod:`.logs` holds the training
window and the leave-one-session-out counts that keep a session's own behaviour out of its
keywords, :mod:`.evaluate` scores keywords against the synthetic world's hidden truth, and
:mod:`.job` is the ``onesearch keywords`` command. Data code: never imports jax.
"""
