"""The live-operations wing: the bus and its channels, feeds, alerts and alert rules,
dispatch orders, presence, freshness and the periodic ops tasks (用 use)."""
