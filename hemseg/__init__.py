"""hemseg: segmentation of spine hemangiomas in MRI with the paper's U-Net."""

from hemseg.inference import Segmenter
from hemseg.model import UNet

__version__ = "0.1.0"
__all__ = ["Segmenter", "UNet", "__version__"]
