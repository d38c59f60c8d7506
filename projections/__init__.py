"""Read-model definitions: one module per read model."""
