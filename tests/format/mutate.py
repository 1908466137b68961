"""Seeded mutations of valid .qmodel files, for the fuzz test and bench/fuzz.py.

    python -m tests.format.mutate FIRST_SEED COUNT

loads COUNT mutated files in this process and prints one line per seed before trying it, so
that a parent process can name the seed that crashed or hung. Exit status 0: every file
loaded or raised qrt's own error; 1: some other exception escaped (printed).
"""
from __future__ import annotations

import random
import struct
import sys
import traceback

import qrt

INTERESTING = (0, 1, 2, 3, 4, 7, 8, 63, 64, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF,
               0x80000000, 0xFFFFFFFF, 0xFFFFFFFE)


def seed_files() -> list[bytes]:
    from tests.sample_models import all_ops_model, conv_chain_model
    return [qrt.to_bytes(all_ops_model()), qrt.to_bytes(conv_chain_model())]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    fb_end = min(len(buf), 4 + struct.unpack_from("<I", buf, 0)[0])
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        # Most mutations hit the FlatBuffer (offsets, lengths, enums), some the whole file.
        end = min(fb_end, len(buf)) if rng.random() < 0.85 else len(buf)
        if end <= 0:
            break
        pos = rng.randrange(end)
        kind = rng.randrange(6)
        if kind == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            buf[pos] = rng.randrange(256)
        elif kind == 2 and pos + 4 <= len(buf):
            value = rng.choice(INTERESTING + (len(buf), rng.randrange(1 << 32)))
            buf[pos & ~3: (pos & ~3) + 4] = struct.pack("<I", value & 0xFFFFFFFF)
        elif kind in (3, 4):  # insert or delete, keeping the size prefix in step
            n = rng.randrange(1, 9)
            if kind == 3:
                buf[pos:pos] = bytes(rng.randrange(256) for _ in range(n))
            else:
                n = -len(buf[pos: pos + n])
                del buf[pos: pos - n]
            if 4 <= pos < fb_end and len(buf) >= 4:
                fb_end += n
                struct.pack_into("<I", buf, 0, max(0, fb_end - 4))
        else:
            del buf[rng.randrange(len(buf)):]
    return bytes(buf)


def try_load(data: bytes) -> bool:
    """True if the file loads (and then re-serialises), False if qrt rejects it."""
    try:
        model = qrt.read_model(data)
    except qrt.QrtError:
        return False
    qrt.to_bytes(model)  # a model that verified must also write
    return True


def main(first: int, count: int) -> int:
    seeds = seed_files()
    loaded = 0
    for seed in range(first, first + count):
        print(f"seed {seed}", flush=True)
        data = mutate(seeds[seed % len(seeds)], random.Random(seed))
        try:
            loaded += try_load(data)
        except Exception:
            print(f"FAIL seed {seed}: an exception other than qrt.QrtError escaped", flush=True)
            traceback.print_exc(file=sys.stdout)
            return 1
    print(f"done {count} files: {loaded} loaded, {count - loaded} rejected with qrt errors", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
