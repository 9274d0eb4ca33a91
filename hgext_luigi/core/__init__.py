"""Plain Python shared by both sides: no Mercurial, no Luigi.

Planning (``affected``), the lineage store, the push queue and the audit chain
over SQLite, access rules, credentials, the subprocess protocol and what a
pipeline subprocess may see of the server (``sandbox``).  Each module is
unit-tested alone (``tests/core/``).
"""
