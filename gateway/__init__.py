"""The public HTTP API (FastAPI) and the user authentication service."""
