"""seqio Task and Mixture registrations, imported by name from gin as T5X users expect.

The student/teacher tasks for every OneSearch stage are registered here once their records and
vocabulary exist (issue #5 of ../shared/ROADMAP.md); importing this package registers them all.
"""
