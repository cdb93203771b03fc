"""OSTE Studio desktop GUI (PySide6): label, train, inspect CAMs, edit and export masks."""
