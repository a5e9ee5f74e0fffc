"""The Images dock: open files, folders or built-in data; the selected image becomes x_0."""
