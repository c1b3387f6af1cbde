"""All queries, one module per resource; services call these and never build SQL themselves."""
