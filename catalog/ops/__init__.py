"""The operations store: alerts, alert-rule cursors, dispatch orders and their history
(additive ``ops_*`` tables on the catalog database)."""
