"""The dataset catalog: manifests and column types, the catalog store (datasets, runs,
versions), search, and the quality store (validation results, quarantine batches)."""
