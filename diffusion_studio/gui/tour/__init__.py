"""The Learn dock: the guided tour through the seeds' equations (resources/tour.json) and its data checks."""
