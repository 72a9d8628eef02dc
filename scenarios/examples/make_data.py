"""Write residual.npz, the small image dataset of residual.yaml: python3 scenarios/examples/make_data.py

32x32 colour images of four classes (a bright horizontal band, a vertical band, a diagonal, a
centre square, each in its own colour) with noise, 240 for training and 60 for testing, the same
for the same seed. The arrays are those an npz dataset holds: train_x, train_y, test_x, test_y.
"""

import sys
from pathlib import Path

import numpy as np

SIZE, CLASSES = 32, 4


def arrays(seed: int = 0, n_train: int = 240, n_test: int = 60) -> dict:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    shapes = [abs(rows - 16) < 4, abs(cols - 16) < 4, abs(rows - cols) < 4,
              (abs(rows - 16) < 7) & (abs(cols - 16) < 7)]
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, CLASSES, n)
        x = rng.normal(0, 0.6, size=(n, 3, SIZE, SIZE)).astype(np.float32)
        for i, label in enumerate(y):
            x[i, label % 3] += 1.5 * shapes[label]
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return out


def write(path: Path, seed: int = 0) -> Path:
    np.savez(path, **arrays(seed))
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("residual.npz")
    print(write(target))
