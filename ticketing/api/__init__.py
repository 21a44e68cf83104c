"""The ticketing HTTP API (FastAPI). Build it with :func:`ticketing.api.app.create_app`."""
