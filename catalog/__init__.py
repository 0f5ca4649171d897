"""What exists and who may see it (通), the ground floor of blockhub.  Sub-packages by
concern: ``datasets`` (manifests, the catalog store, search, quality results), ``identity``
(agencies, principals, tokens), ``access`` (grants, masking, sharing, disclosure),
``domain`` (identifiers, regions, addresses, working days, the clock), ``lake`` (Iceberg
table I/O), ``sources`` (file roots, connection profiles), ``audit`` (the chain) and
``ops`` (alerts, orders).  Beside them: ``errors`` (one root error), ``outbox`` (events
staged in the catalog's own transactions), ``sqltext`` (SQL quoting), ``runtime``.
Imports nothing else of blockhub (docs/architecture.md, tests/test_layering.py)."""
