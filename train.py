"""Main job: train a teacher on complete inputs, then distil it into a student that copes with missing ones.

    accelerate launch train.py                                   # embedded default: synthetic demo, CorrKD
    accelerate launch train.py --config configs/mosi_corrkd.yaml # real CMU-MOSI (prepare it first, see README)
    accelerate launch train.py --config X.yaml --stage student --method logit --num_train_epochs 5

Arguments: `python train.py --help`; the pipeline lives in `hf_mmkd/training/`.
"""

import sys

from hf_mmkd.training import main

if __name__ == "__main__":
    sys.exit(main())
