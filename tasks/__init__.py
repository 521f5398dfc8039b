"""seqio Task and Mixture registrations, imported by name from gin as T5X users expect.

Importing ``tasks`` registers the OneSearch tasks (``tasks/onesearch.py``) over the records in
``$ONESEARCH_EXAMPLES_DIR`` (default ``demo_output/examples``) with the vocabulary in
``$ONESEARCH_VOCAB_DIR`` (default ``demo_output/sids/vocab``), the outputs of ``make demo``.
When the vocabulary is not there yet nothing is registered (and a log line says so); call
``tasks.onesearch.register_onesearch_tasks(examples_dir, vocab_dir)`` once it exists.
"""

import os

from absl import logging

from tasks.onesearch import MIXTURES, TASKS, register_onesearch_tasks

EXAMPLES_DIR = os.environ.get("ONESEARCH_EXAMPLES_DIR", "demo_output/examples")
VOCAB_DIR = os.environ.get("ONESEARCH_VOCAB_DIR", "demo_output/sids/vocab")

if os.path.exists(os.path.join(VOCAB_DIR, "vocab.json")):
    register_onesearch_tasks(EXAMPLES_DIR, VOCAB_DIR)
else:
    logging.info("tasks: no vocabulary in %s yet; OneSearch tasks not registered", VOCAB_DIR)

__all__ = ["MIXTURES", "TASKS", "register_onesearch_tasks"]
