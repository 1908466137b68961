"""Coverage-guided fuzzing of the .qmodel loader with atheris (libFuzzer for Python).

    make fuzz                                  # 10 minutes
    python -m bench.fuzz --seconds 3600        # any length; needs `pip install atheris`

Seeds are valid models plus the mutations of bench/fixtures/mutate.py; libFuzzer mutates from
there, guided by coverage of qrt's reader and verifier. Every input must load (and then
re-serialise) or raise qrt.QrtError; anything else, a crash or a hang (> --timeout s) stops the
run with the input saved as crash-*/timeout-* in the output folder. The last line reports how
many inputs were survived.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=600, help="how long to fuzz (default 600)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--out", default="bench/out/fuzz", help="corpus and crash folder")
    args = parser.parse_args()
    try:
        import atheris
    except ImportError:
        sys.exit("bench.fuzz needs atheris: pip install atheris (make fuzz installs it)")

    with atheris.instrument_imports():
        import qrt
        from bench.fixtures.mutate import mutate, seed_files, try_load

    out = Path(args.out)
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seed_files()):
        (corpus / f"seed-{i}").write_bytes(data)
        for s in range(20):
            (corpus / f"mutant-{i}-{s}").write_bytes(mutate(data, random.Random(s)))

    stats = {"inputs": 0, "loaded": 0, "start": time.time()}

    def one_input(data: bytes):
        stats["inputs"] += 1
        stats["loaded"] += try_load(data)  # raises (and so stops the fuzzer) on anything but QrtError
        elapsed = time.time() - stats["start"]
        if elapsed > args.seconds:  # libFuzzer exits without running Python's atexit: stop here
            print(f"\nqrt fuzz: survived {stats['inputs']} inputs in {elapsed:.0f} s "
                  f"({stats['loaded']} loaded, {stats['inputs'] - stats['loaded']} rejected with qrt "
                  f"errors), qrt {qrt.__version__}", flush=True)
            os._exit(0)

    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={args.seconds + 60}", f"-timeout={args.timeout}",
                   f"-artifact_prefix={out}/", "-rss_limit_mb=4096", "-print_final_stats=1"], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
