"""Data files shipped with the app (icons, the API contract, translations)."""
