"""PESQ (ITU-T P.862.2, wideband) of a degraded speech file against its reference.

Usage: pesq_score.py REFERENCE.wav DEGRADED.wav
Both 16 kHz mono 16-bit WAV. Prints the MOS-LQO score.
Needs the `pesq` and `numpy` packages (cargo xtask installs them).
"""

import sys
import wave

import numpy as np
from pesq import pesq


def read(path):
    with wave.open(path, "rb") as f:
        if f.getframerate() != 16000 or f.getnchannels() != 1 or f.getsampwidth() != 2:
            sys.exit(f"{path}: expected 16 kHz mono 16-bit")
        return np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16).astype(np.float32)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(f"{pesq(16000, read(sys.argv[1]), read(sys.argv[2]), 'wb'):.3f}")
