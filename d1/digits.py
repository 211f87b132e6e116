"""scikit-learn's digits as training data for `d1 train`: load, split, save, score.

The data: 1,797 images of 8 x 8 pixels with values 0..16, of the digits 0-9 (it ships inside
scikit-learn: `sklearn.datasets.load_digits`, read from the package, nothing downloaded).
Features are the 64 pixels scaled to [0, 1] (divided by 16), labels one-hot over 10 classes,
both float32. The split is fixed: `numpy.random.default_rng(0).permutation(1797)`, its first
360 samples (20%, rounded up as scikit-learn's `train_test_split` rounds) are the test set,
the other 1,437 the training set, each in permutation order.

`write(dir)` writes `dir/digits.npz` (x_train, y_train, x_test, y_test) and the same four arrays
as `.npy` files for `d1 train --input`; `load_split(npz)` reads the `.npz` back without
scikit-learn. From the shell:

    python -m d1.digits data                     # needs scikit-learn, once
    d1 train programs/train_digits.d1k --input x=data/x_train.npy --input y=data/y_train.npy \\
             --epochs 30 --shuffle 0 --out-dir digits
    d1 run programs/digits_predict.d1k --params digits/params.npz --input x=data/x_test.npy \\
             --out-dir digits
    python -m d1.digits accuracy digits/z.npy data/y_test.npy
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from d1isa.errors import D1Error

SAMPLES = 1797
CLASSES = 10
FEATURES = 64
TEST_FRACTION = 0.2
SPLIT_SEED = 0
ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def load() -> tuple[np.ndarray, np.ndarray]:
    """(features [1797, 64] in [0, 1], labels [1797] int) from scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise D1Error("the digits data set ships with scikit-learn, which is not installed: "
                      "pip install 'd1isa[demo]' (or read a digits.npz written earlier with "
                      "load_split)") from None
    d = load_digits()
    x = np.asarray(d.data, dtype=np.float32) / np.float32(16)
    labels = np.asarray(d.target, dtype=np.int64)
    if x.shape != (SAMPLES, FEATURES):
        raise D1Error(f"scikit-learn's digits have shape {x.shape}, expected "
                      f"{(SAMPLES, FEATURES)}")
    return x, labels


def one_hot(labels: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    out = np.zeros((len(labels), classes), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1
    return out


def split(x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed 80/20 split (see the module docstring), labels one-hot."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = math.ceil(TEST_FRACTION * len(x))
    test, train = order[:n_test], order[n_test:]
    y = one_hot(labels)
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def write(directory: str | Path) -> dict[str, Path]:
    """Write digits.npz and x_train.npy, y_train.npy, x_test.npy, y_test.npy into
    `directory` (made if missing); returns the paths by name."""
    from d1isa.files import check_output_dir, write_atomic
    d = check_output_dir(Path(directory), "digits directory")
    arrays = split(*load())
    paths = {"digits": d / "digits.npz"}
    write_atomic(paths["digits"], _npz(arrays))
    for name, a in arrays.items():
        paths[name] = d / f"{name}.npy"
        write_atomic(paths[name], _npy(a))
    return paths


def load_split(path: str | Path) -> dict[str, np.ndarray]:
    """The four arrays of a digits.npz `write` made (no scikit-learn needed)."""
    from d1.params import load_params
    arrays = load_params(path, "digits")
    missing = [n for n in ARRAYS if n not in arrays]
    if missing:
        raise D1Error(f"{path}: not a digits split (missing {', '.join(missing)})")
    return {n: np.asarray(arrays[n], dtype=np.float32) for n in ARRAYS}


def accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    """The share of samples whose highest score is at their one-hot label."""
    scores, y = np.asarray(scores), np.asarray(y)
    if scores.shape != y.shape or scores.ndim != 2:
        raise D1Error(f"scores {list(scores.shape)} and one-hot labels {list(y.shape)} must "
                      "be the same [N, classes]")
    return float(np.mean(np.argmax(scores, axis=1) == np.argmax(y, axis=1)))


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    import io
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def main(argv: list[str]) -> int:
    """`python -m d1.digits DIR` writes the split; `python -m d1.digits accuracy SCORES.npy
    Y.npy` prints the accuracy of scores (e.g. a `d1 run` output) against one-hot labels."""
    from d1.commands.run import load_npy
    usage = "usage: python -m d1.digits DIR | python -m d1.digits accuracy SCORES.npy Y.npy"
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    # An option is never taken for DIR (`--help` would become a directory of that name); a
    # directory whose name starts with '-' is written ./-name.
    if any(a.startswith("-") for a in argv):
        print(usage, file=sys.stderr)
        return 2
    try:
        if len(argv) == 3 and argv[0] == "accuracy":
            acc = accuracy(load_npy(argv[1], "scores"), load_npy(argv[2], "labels"))
            print(f"accuracy {100 * acc:.2f}% ({argv[1]} against {argv[2]})")
            return 0
        if len(argv) == 1 and argv[0] != "accuracy":
            paths = write(argv[0])
            print("wrote " + ", ".join(str(p) for p in paths.values()))
            return 0
    except D1Error as e:
        print(e.render(), file=sys.stderr)
        return e.exit_code
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
