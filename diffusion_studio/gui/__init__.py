"""The PySide6 + pyqtgraph desktop app: window, panels, workers. Qt lives only here."""
