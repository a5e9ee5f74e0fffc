"""The window's panels, one folder per tab: a panel.py and its parts (base.py is what every panel has)."""
