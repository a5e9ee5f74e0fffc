"""The 2-D tab (the geometry lab): points, their paths from noise, and the field that moves them."""
