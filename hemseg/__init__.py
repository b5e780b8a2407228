"""hemseg: segmentation of spine hemangiomas in MRI with the paper's U-Net."""

from hemseg.inference.segmenter import Segmenter
from hemseg.model import UNet
from hemseg.version import __version__

__all__ = ["Segmenter", "UNet", "__version__"]
