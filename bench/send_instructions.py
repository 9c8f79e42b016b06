"""Instructions per message of `mailer send`, against a baseline commit, in the same run.

  python bench/send_instructions.py [--baseline HEAD~1] [--small 4000] [--large 12000]

On a shared machine rates drift by 20-40% from one minute to the next, and a send that is
faster than the sink shows no gain at all. Instructions do not drift: this runs `mailer send`
under `valgrind --tool=callgrind` (the sink and SpamAssassin run outside it) at two audience
sizes, for this checkout and for the baseline (checked out into a temporary worktree), and
prints the instructions per message (the slope between the two sizes) and the fixed part.
Work in the kernel (socket writes, commits) is not counted: a change that saves system calls
shows in `send_bench.py`, not here. About a minute per run at the default sizes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.send_bench as send_bench  # noqa: E402


def instructions(root: Path, n: int, port: int, tmp: Path) -> int:
    """User-space instructions of one `mailer send` of `n` (checkout `root`) under callgrind."""
    out = tmp / f"callgrind.{root.name}.{n}"
    real_popen = subprocess.Popen

    def under_valgrind(args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        if args[1:3] == ["-m", "mailer"]:
            args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *args]
            kwargs["stderr"] = subprocess.DEVNULL
        return real_popen(args, **kwargs)  # type: ignore[call-overload,no-any-return]

    send_bench.ROOT = root
    send_bench.subprocess.Popen = under_valgrind  # type: ignore[misc]
    try:
        send_bench.run_mailer_send(tmp / f"{root.name}-{n}", n, port, 4)
    finally:
        send_bench.subprocess.Popen = real_popen  # type: ignore[misc]
    match = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"no instruction count in {out}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD~1", help="a commit of this repository")
    parser.add_argument("--small", type=int, default=4000)
    parser.add_argument("--large", type=int, default=12000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (Debian: apt install valgrind)")
    with tempfile.TemporaryDirectory() as d, send_bench.Sink(0) as sink:
        tmp = Path(d)
        baseline = tmp / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(baseline), args.baseline], check=True)
        try:
            per_message = {}
            for label, root in (("baseline", baseline), ("this checkout", ROOT)):
                small = instructions(root, args.small, sink.port, tmp)
                large = instructions(root, args.large, sink.port, tmp)
                slope = (large - small) / (args.large - args.small)
                per_message[label] = slope
                print(f"{label:<14} {slope:10,.0f} instructions per message, fixed "
                      f"{small - slope * args.small:14,.0f}", flush=True)
            ratio = per_message["this checkout"] / per_message["baseline"]
            print(f"this checkout / baseline: {ratio:.3f} per message ({args.baseline})")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(baseline)], check=False)


if __name__ == "__main__":
    main()
