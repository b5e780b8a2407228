"""Copies of a folder's NIfTI volumes and labels at another voxel size (mm, isotropic), uncompressed.

    python scripts/resample_volumes.py ../shared/data/spine-mri VOLUMES 1.25

Images are resampled trilinearly and rounded to their own integer type, labels by nearest neighbour (nibabel's
``resample_to_output``). The physical-contract models were trained on such 1.25 mm copies: they are what the model
sees anyway, and they are a third of the size to carry to a GPU machine (docs/experiments.md).
"""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_to_output


def main(source: str, out: str, voxel_mm: str) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    for image_path in sorted(Path(source).glob("*_image.nii*")):
        case = image_path.name.split("_image.nii")[0]
        for kind, order in (("image", 1), ("label", 0)):
            volume = nib.load(image_path.with_name(image_path.name.replace("_image.", f"_{kind}.")))
            resampled = resample_to_output(volume, (float(voxel_mm),) * 3, order=order)
            dtype = volume.get_data_dtype()
            info = np.iinfo(dtype)
            data = np.clip(np.rint(resampled.get_fdata()), info.min, info.max).astype(dtype)
            nib.save(nib.Nifti1Image(data, resampled.affine), Path(out) / f"{case}_{kind}.nii")


if __name__ == "__main__":
    main(*sys.argv[1:])
