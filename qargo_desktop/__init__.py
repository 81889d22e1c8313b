"""qargo-desktop: keep a Qargo organisation's linked Microsoft 365 mailboxes healthy."""

__version__ = "0.1.0"

APP_NAME = "qargo-desktop"
APP_DISPLAY_NAME = "Qargo Desktop"
ORGANISATION_NAME = "Qargo"
