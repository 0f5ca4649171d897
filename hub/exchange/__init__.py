"""The exchange wing: SQL checked on DuckDB's parse tree, run in the reader's room over
replicas and access views, encoded as rows, blocks and files (通 connect)."""
