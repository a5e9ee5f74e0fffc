"""Images and datasets in, tensors in [-1, 1] out; no Qt here, so the CLI and tests use it headless."""

from .builtin import BUILTIN_DATASETS, sample_photos
from .shapes import SHAPE_CLASSES
from .cifar import load_cifar10
from .convert import from_uint8, make_grid, resize_batch, save_gif, save_grid, save_png, to_channels, to_uint8
from .dataset import ImageDataset
from .specs import load_dataset
from .errors import DataError, LoadCancelled
from .folder import FolderProgress, LoadReport, iter_load_folder, load_folder, scan_images
from .images import IMAGE_EXTENSIONS, load_image, load_image_full, open_image, to_array
from .mnist import load_mnist

__all__ = [
    "BUILTIN_DATASETS",
    "DataError",
    "FolderProgress",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "LoadCancelled",
    "LoadReport",
    "SHAPE_CLASSES",
    "from_uint8",
    "iter_load_folder",
    "load_cifar10",
    "load_dataset",
    "load_folder",
    "load_image",
    "load_image_full",
    "load_mnist",
    "make_grid",
    "open_image",
    "resize_batch",
    "sample_photos",
    "save_gif",
    "save_grid",
    "save_png",
    "scan_images",
    "to_array",
    "to_channels",
    "to_uint8",
]
