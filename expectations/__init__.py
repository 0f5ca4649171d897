"""Quality suites (Great Expectations 1.x), one per dataset, and the gate that runs them.

The quality-gate issue fills this package; the ingest flow already has the place where a
staged batch is validated before publish (between ``extract`` and ``publish``).
"""
