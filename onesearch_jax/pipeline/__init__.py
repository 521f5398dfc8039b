"""Pipelines of ``onesearch`` commands with up-to-date checks: the end-to-end demo (``onesearch demo``)."""
