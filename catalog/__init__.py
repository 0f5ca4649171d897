"""What exists and who may see it (通): manifests, the catalog store, the Iceberg lake,
the event log and sharing policy.  Imports nothing else of blockhub."""
