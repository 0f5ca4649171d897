"""Who may call the hub: agencies, principals (with their role) and tokens — the identity
store, apart from the dataset catalog's store (docs/decisions.md D48)."""
