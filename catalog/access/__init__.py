"""Who may see what: effective access of a principal to a dataset, grants and access
requests, masking rules, sharing decisions and the one disclosure rule for non-SQL paths.
Pure decisions over records of :mod:`catalog.datasets` and values of :mod:`catalog.domain`."""
