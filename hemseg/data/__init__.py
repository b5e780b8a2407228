"""Data: reading MRI volumes and slices, simulating lesions, and the slice folders that training reads.

``hemseg.data.load`` opens a slice folder, a saved data set or a Hub data set as a ``datasets.Dataset``.
"""

from hemseg.data.dataset import load

__all__ = ["load"]
