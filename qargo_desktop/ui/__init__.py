"""The Qt layer: application, windows, models and dialogs."""
