"""HTTP routers of the auth service, one per resource."""
