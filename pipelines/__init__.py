"""Example pipeline for hgext_luigi.

Raw sales files (``data/raw/sales-<region>.csv``) are cleaned one region at a
time, then aggregated into a report; an unrelated task indexes ``docs/``.
Change one region's file and only that region's cleaning and the report rerun.
"""

from . import docs, sales  # noqa: F401  (registers the tasks)
