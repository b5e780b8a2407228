"""hemseg: segmentation of spine hemangiomas in MRI with the paper's U-Net."""

__version__ = "0.1.0"

from hemseg.inference.segmenter import Segmenter
from hemseg.model import UNet

__all__ = ["Segmenter", "UNet", "__version__"]
