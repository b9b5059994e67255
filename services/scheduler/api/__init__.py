"""HTTP layer of the scheduler: one module per resource."""
