"""The geometry lab's work, Qt-free: the 2-D tab's computations (lab), what 2-D samples become on disk
(outputs), and the ideal denoiser opened as a model (ideal)."""
