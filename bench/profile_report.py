"""Read the py-spy samples that `bench/bench_service.py --profile DIR` writes, one collapsed-stack file per phase:
the share of samples in which a function is on the stack (inclusive), or what a function spends its share on
(the frames right below it). Run:

    .venv/bin/python bench/profile_report.py DIR/GET__v1_jobs__id.txt [--match REGEX] [--top 40]
    .venv/bin/python bench/profile_report.py DIR/POST__v1_jobs.txt --below "submit_job (api/services/jobs.py)"

Shares are of all samples in the file (py-spy --gil: samples of the thread holding the GIL), so they add up
across threads; line numbers are dropped, so a function counts once per stack however many lines it shows on.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_LINE = re.compile(r":\d+\)")


def stacks(lines: Iterable[str]) -> Iterable[tuple[list[str], int]]:
    """(frames from the root, sample count) per line of py-spy's raw (collapsed) format."""
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            yield [_LINE.sub(")", frame) for frame in stack.split(";")], int(count)


def inclusive(samples: Iterable[tuple[list[str], int]]) -> tuple[Counter[str], int]:
    """Samples in which each function is on the stack, and all samples."""
    shares: Counter[str] = Counter()
    total = 0
    for frames, count in samples:
        total += count
        for frame in set(frames):
            shares[frame] += count
    return shares, total


def below(samples: Iterable[tuple[list[str], int]], function: str) -> tuple[Counter[str], int]:
    """Where `function`'s samples go: the frame right below its innermost call ("<self>" when it is on top)."""
    shares: Counter[str] = Counter()
    total = 0
    for frames, count in samples:
        total += count
        calls = [i for i, frame in enumerate(frames) if frame == function]
        if calls:
            i = calls[-1]
            shares[frames[i + 1] if i + 1 < len(frames) else "<self>"] += count
    return shares, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="one phase's collapsed stacks, from bench_service.py --profile")
    parser.add_argument("--below", metavar="FUNCTION", help='a frame as printed, e.g. "get_job (api/routes/jobs.py)"')
    parser.add_argument("--match", metavar="REGEX", help="only functions matching this")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    with args.file.open() as lines:
        shares, total = below(stacks(lines), args.below) if args.below else inclusive(stacks(lines))
    if not total:
        raise SystemExit(f"{args.file}: no samples")
    print(f"{total} samples")
    shown = (item for item in shares.most_common() if args.match is None or re.search(args.match, item[0]))
    for _, (frame, count) in zip(range(args.top), shown, strict=False):
        print(f"{100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
