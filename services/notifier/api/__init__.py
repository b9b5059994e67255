"""HTTP layer of the notifier: one module per resource."""
