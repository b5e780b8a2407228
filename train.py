"""Train the hemseg U-Net with Hugging Face Accelerate: `accelerate launch train.py --recipe R --data D --output-dir O`.

The script lives in the package (`hemseg.training.run`), so that `hemseg train` runs the same code once hemseg is
installed; `python train.py --help` lists its flags.
"""

from hemseg.training.run import cli

if __name__ == "__main__":
    raise SystemExit(cli())
