"""The user authentication service: registration, login, sessions, passwords, signing keys, API keys.

Runs as its own ASGI app (`gateway.auth.app:create_auth_app`, `lotabots serve auth`) or embedded in the
gateway. The gateway side (verifying access tokens locally) lives in `gateway.auth.access_tokens`.
"""
