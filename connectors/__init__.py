"""Sources (聚): each reads one kind of agency system into Arrow record batches."""
