"""HTTP layer of the inventory: one module per resource."""
