"""Benchmark: `mailer send` with DKIM signing against the same send unsigned, in one run.

  python bench/dkim_bench.py [--n 5000] [--connections 4] [--rounds 2]

The same sink (bench/sink.py), the same audience and edition, four configurations per round
(the order reversed every other round): unsigned, RSA-2048, Ed25519, and both at once (two
signatures a message). Prints messages per second for each (whole command, and the dispatch
phase), the fastest of the rounds, and each signed mode's ratio to the unsigned send per round
and their median. Issue 26: quote the ratio; if RSA halves throughput, say so in
docs/sending.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402
from send_bench import Sink, run_mailer_send  # noqa: E402

MODES = ("unsigned", "rsa", "ed25519", "both")


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def environments() -> dict[str, dict[str, str]]:
    rsa_pem = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ed_pem = _pem(ed25519.Ed25519PrivateKey.generate())
    base = {"MAILER_DKIM_DOMAIN": "labourlist.org", "MAILER_DKIM_SELECTOR": "mail2026",
            "MAILER_DKIM_ED25519_SELECTOR": "ed2026"}
    return {"unsigned": {},
            "rsa": {**base, "MAILER_DKIM_PRIVATE_KEY": rsa_pem},
            "ed25519": {**base, "MAILER_DKIM_PRIVATE_KEY": ed_pem},
            "both": {**base, "MAILER_DKIM_PRIVATE_KEY": rsa_pem + ed_pem}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    envs = environments()
    runs: dict[str, list[tuple[float, float, int, float]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp, Sink() as sink:
        for round_ in range(1, args.rounds + 1):
            order = MODES if round_ % 2 else MODES[::-1]
            for mode in order:
                runs[mode].append(run_mailer_send(Path(tmp) / f"r{round_}-{mode}", args.n,
                                                  sink.port, args.connections,
                                                  extra_env=envs[mode]))
            print(f"round {round_}: " + "  ".join(
                f"{m} {args.n / runs[m][-1][0]:.0f} msg/s" for m in order), flush=True)
    print(f"mailer send, {args.n} messages (whole command / dispatch phase, fastest of "
          f"{args.rounds}):")
    for mode in MODES:
        total, phase = min(r[0] for r in runs[mode]), min(r[1] for r in runs[mode])
        print(f"  {mode:<9}{args.n / total:8.0f} / {args.n / phase:.0f} msg/s")
    for mode in MODES[1:]:
        whole = [u[0] / s[0] for u, s in zip(runs["unsigned"], runs[mode], strict=True)]
        phase = [u[1] / s[1] for u, s in zip(runs["unsigned"], runs[mode], strict=True)]
        print(f"  ratio {mode}/unsigned per round {'  '.join(f'{x:.3f}' for x in whole)}: "
              f"median {statistics.median(whole):.3f} (dispatch phase median "
              f"{statistics.median(phase):.3f})")


if __name__ == "__main__":
    main()
