"""Find the app's data files the same way from source, an installed wheel and a bundle."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def resources_dir() -> Path:
    """Return the folder that holds the shipped resources.

    A PyInstaller bundle unpacks them to ``qargo_desktop/resources`` under its own
    folder; an installed or editable package finds them as ``qargo_desktop.resources``.
    """
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root is not None:
        return Path(frozen_root) / "qargo_desktop" / "resources"
    try:
        # Imported by name: the package is the top-level resources/ folder, mapped into
        # qargo_desktop by pyproject.toml, so static tools cannot see it.
        package = importlib.import_module("qargo_desktop.resources")
        return Path(next(iter(package.__path__)))
    except ImportError:
        # Running straight from a checkout that was never installed.
        return Path(__file__).resolve().parents[2] / "resources"


def resource_path(*parts: str) -> Path:
    """Return the path of one shipped resource file."""
    return resources_dir().joinpath(*parts)
