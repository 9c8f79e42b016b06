"""SpamAssassin's score for a message (preflight's `spam-score` check).

`spamassassin -L -t` takes about a second, most of it loading its rules, and it loads them
only after it has read the whole message. `mailer send` and `mailer preflight` start
SpamAssassin's own library with its rules loaded while the edition is still being collected
and built (`warmed`), and hand it the message when there is one: the check then costs its
scan alone (about 0.3 s of the 0.9 for the 47 KB edition). Same library, same rules and
options, same report: the score is the command's (a test compares the two).

Where the operator runs SpamAssassin's daemon, `spamassassin_command = "spamc"` (with spamc's
own options, e.g. ``"spamc -d 127.0.0.1 -p 783"``, or none to use ``/etc/spamassassin/
spamc.conf``) asks `spamd`, whose rules are loaded once for all: the check costs the scan
alone. spamd's own configuration then applies (its network tests, Bayes and learning).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailer.config import Settings

log = logging.getLogger("mailer.spamassassin")

DEFAULT_SPAM_TIMEOUT = 60.0


class SpamCheckUnavailable(Exception):
    """SpamAssassin is not installed or did not answer; the message says which."""


@dataclass(frozen=True)
class SpamRule:
    """A SpamAssassin rule that fired on the sample message."""

    name: str
    score: float
    description: str = ""


@dataclass(frozen=True)
class SpamResult:
    score: float
    rules: list[SpamRule]


_spam_cache: dict[str, SpamResult] = {}
_spam_cache_lock = threading.Lock()
_SPAM_CACHE_SIZE = 64
_STATUS_SCORE_RE = re.compile(r"score=(-?\d+(?:\.\d+)?)")
_STATUS_TESTS_RE = re.compile(r"tests=(.*?)(?:\s+(?:autolearn|autolearn_force|version)=|$)")
_RULE_ROW_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s*(.*)$")
# The user preferences of every check. A check must not teach Bayes: by default SpamAssassin
# learns each message it scores (`autolearn=ham`), which for a site whose `bayes_path` is
# shared would train the operator's filter on our own newsletter every day. (It also costs
# 0.1 s of the 0.9, in a throw-away HOME whose database is deleted afterwards.) The score
# is the same: learning happens after scoring.
_PREFS = "bayes_auto_learn 0\n"

# What `spamassassin -L -t -p PREFS` does with one message (its options as that script passes
# them to the library), except that the rules are loaded before the message is read.
_WARM_SCRIPT = r"""
use strict;
use warnings;
use Mail::SpamAssassin;
my ($prefs, $prefix, $def_rules, $local_rules, $local_state) = @ARGV;
my $sa = Mail::SpamAssassin->new({
    userprefs_filename => $prefs, local_tests_only => 1, dont_copy_prefs => 1,
    require_rules => 1, pre_config_text => "\n", post_config_text => "\n",
    PREFIX => $prefix, DEF_RULES_DIR => $def_rules, LOCAL_RULES_DIR => $local_rules,
    LOCAL_STATE_DIR => $local_state,
});
$sa->init(1);
binmode STDIN;
binmode STDOUT;
my $message = do { local $/; <STDIN> };
exit 3 unless defined $message && length $message;  # (not needed after all)
my $mail = $sa->parse($message);
my $status = $sa->check($mail);
print $status->rewrite_mail(), $status->get_report();
$status->finish();
$mail->finish();
$sa->finish();
"""


def configured_command(settings: Settings) -> str:
    """The `spamassassin_command` setting; an empty value means the default command."""
    return settings.spamassassin_command or "spamassassin"


@dataclass
class _Warm:
    """SpamAssassin started ahead, waiting for its message on stdin."""

    command: str
    proc: subprocess.Popen[bytes]
    home: tempfile.TemporaryDirectory[str]

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
        self.home.cleanup()


_warm: _Warm | None = None
_warm_lock = threading.Lock()


@contextmanager
def warmed(command: str = "spamassassin") -> Iterator[None]:
    """Start SpamAssassin for `command` now, so that the first `spam_score` in this block
    finds its rules loaded; one left unused (a resumed send, an edition with no articles) is
    ended on the way out. When `command` is not SpamAssassin's own Perl script (a wrapper of
    the operator's), nothing is started and `spam_score` runs the command as it is."""
    global _warm
    started = _start_warm(command)
    with _warm_lock:
        previous, _warm = _warm, started
    if previous is not None:
        previous.end()
    try:
        yield
    finally:
        with _warm_lock:
            left, _warm = (_warm, None) if _warm is started else (None, _warm)
        if left is not None:
            left.end()


def release() -> None:
    """End a SpamAssassin started ahead and not used: nothing is scored once sending starts
    (a resumed send never checks), and it holds its rules in memory until it is ended."""
    global _warm
    with _warm_lock:
        left, _warm = _warm, None
    if left is not None:
        left.end()


def _start_warm(command: str) -> _Warm | None:
    binary = shutil.which(command)
    perl = _perl_of(binary) if binary else None
    if perl is None:
        return None
    try:
        home = tempfile.TemporaryDirectory(prefix="mailer-sa-")
    except OSError as exc:
        log.info("could not start SpamAssassin ahead (%s); it will run when needed", exc)
        return None
    prefs = Path(home.name) / "user_prefs"
    try:
        prefs.write_text(_PREFS, encoding="utf-8")
        proc = subprocess.Popen([*perl[0], "-e", _WARM_SCRIPT, str(prefs), *perl[1]],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "HOME": home.name})
    except OSError as exc:
        log.info("could not start SpamAssassin ahead (%s); it will run when needed", exc)
        home.cleanup()
        return None
    return _Warm(command, proc, home)


def _perl_of(binary: str) -> tuple[list[str], list[str]] | None:
    """How SpamAssassin's own `spamassassin` script at `binary` runs the library: its Perl
    and library directories (`#!`, `use lib`), and the four directories substituted into it
    at install time. None for any other script (an operator's wrapper runs as it is)."""
    try:
        with open(binary, "rb") as script:
            head = script.read(8192).decode("utf-8", "replace")
    except OSError:
        return None
    shebang = re.match(r"#!\s*(?:\S*/env\s+)?(\S*perl[\d.]*)(?:\s|$)", head)
    dirs = dict(re.findall(r"^my \$(PREFIX|DEF_RULES_DIR|LOCAL_RULES_DIR|LOCAL_STATE_DIR)\s*="
                           r"\s*'([^']*)';", head, re.MULTILINE))
    if shebang is None or len(dirs) != 4:
        return None
    perl = shutil.which(shebang.group(1))
    if perl is None:
        return None
    libs = re.findall(r"^use lib '([^']+)';", head, re.MULTILINE)
    return ([perl, *(f"-I{lib}" for lib in libs)],
            [dirs[name] for name in ("PREFIX", "DEF_RULES_DIR", "LOCAL_RULES_DIR",
                                     "LOCAL_STATE_DIR")])


def _take_warm(command: str) -> _Warm | None:
    global _warm
    with _warm_lock:
        warm = _warm
        if warm is None or warm.command != command:
            return None
        _warm = None
        return warm


def _score_warm(warm: _Warm, data: bytes, timeout: float) -> SpamResult | None:
    """The warm SpamAssassin's score, or None if it failed to give one (the caller then runs
    the command, whose own error, if any, is the one to report)."""
    try:
        out, err = warm.proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        warm.end()
        raise SpamCheckUnavailable(
            f"spamassassin took over {timeout:g}s: score not checked") from None
    finally:
        warm.home.cleanup()
    result = (parse_spamassassin(out.decode("utf-8", errors="replace"))
              if warm.proc.returncode == 0 else None)
    if result is None:
        log.info("SpamAssassin started ahead gave no score (exit %s%s); running %s",
                 warm.proc.returncode, _last_line(err), warm.command)
    return result


def spam_score(data: bytes, *, command: str = "spamassassin",
               timeout: float = DEFAULT_SPAM_TIMEOUT) -> SpamResult:
    """Score a message with `spamassassin -L -t` (local tests only: no DNS or network), or
    with the SpamAssassin that `warmed` started for `command`, or with spamd through `spamc
    -R` when `command` is spamc (its words after the first are its options).

    The user preferences and any Bayes files go to a throw-away HOME, so a check never writes
    to the operator's ~/.spamassassin. An identical message (ignoring its random MIME boundary)
    is scored once per process: the score depends on nothing else.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise SpamCheckUnavailable(f"spamassassin_command cannot be read ({exc}): "
                                   "score not checked") from None
    name = argv[0] if argv else "spamassassin"
    binary = shutil.which(name)
    if binary is None:
        raise SpamCheckUnavailable(f"{name} not installed: score not checked")
    key = hashlib.sha256(command.encode() + b"\0" + _without_boundary(data)).hexdigest()
    with _spam_cache_lock:
        cached = _spam_cache.get(key)
    if cached is not None:
        return cached
    result: SpamResult | None
    if Path(binary).name == "spamc":
        result = _score_spamc([binary, *argv[1:]], data, timeout)
    else:
        warm = _take_warm(command)
        result = _score_warm(warm, data, timeout) if warm is not None else None
        if result is None:
            result = _score_cold([binary, *argv[1:]], data, timeout)
    with _spam_cache_lock:
        if len(_spam_cache) >= _SPAM_CACHE_SIZE:
            _spam_cache.pop(next(iter(_spam_cache)))
        _spam_cache[key] = result
    return result


def _score_cold(argv: list[str], data: bytes, timeout: float) -> SpamResult:
    with tempfile.TemporaryDirectory(prefix="mailer-sa-") as home:
        prefs = Path(home) / "user_prefs"
        prefs.write_text(_PREFS, encoding="utf-8")
        env = {**os.environ, "HOME": home}
        try:
            proc = subprocess.run([*argv, "-L", "-t", "-p", str(prefs)], input=data,
                                  capture_output=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise SpamCheckUnavailable(
                f"spamassassin took over {timeout:g}s: score not checked") from None
        except OSError as exc:
            raise SpamCheckUnavailable(f"spamassassin could not run ({exc}): "
                                       "score not checked") from None
    result = parse_spamassassin(proc.stdout.decode("utf-8", errors="replace"))
    if result is None:
        raise SpamCheckUnavailable(f"spamassassin gave no score (exit {proc.returncode}"
                                   f"{_last_line(proc.stderr)}): score not checked")
    return result


def _score_spamc(argv: list[str], data: bytes, timeout: float) -> SpamResult:
    """spamd's score through `spamc -R` (the score, then the report); `-x`, so that spamc
    says when it cannot reach spamd instead of passing the message through unscored."""
    try:
        proc = subprocess.run([*argv, "-R", "-x"], input=data, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SpamCheckUnavailable(
            f"spamc took over {timeout:g}s: score not checked") from None
    except OSError as exc:
        raise SpamCheckUnavailable(f"spamc could not run ({exc}): score not checked") from None
    result = (parse_spamc(proc.stdout.decode("utf-8", errors="replace"))
              if proc.returncode == 0 else None)
    if result is None:
        raise SpamCheckUnavailable(f"spamc gave no score (exit {proc.returncode}"
                                   f"{_last_line(proc.stderr)}; is spamd running?): "
                                   "score not checked")
    return result


def parse_spamc(output: str) -> SpamResult | None:
    """`spamc -R`: "score/threshold" on the first line, then spamd's report, whose table
    gives the rules (`parse_spamassassin`)."""
    first, _, report = output.replace("\r\n", "\n").partition("\n")
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)\s*", first)
    if match is None:
        return None
    table = parse_spamassassin(report)
    return SpamResult(float(match.group(1)), table.rules if table is not None else [])


def _last_line(stderr: bytes) -> str:
    """": <the last line SpamAssassin wrote to stderr>", or "" (its reason for failing)."""
    lines = stderr.decode("utf-8", errors="replace").strip().splitlines()
    return f": {lines[-1]}" if lines else ""


def parse_spamassassin(output: str) -> SpamResult | None:
    """Read the total from X-Spam-Status and each rule's points from the "Content analysis
    details" table that `-t` appends; rules named in the header but absent from the table
    count 0."""
    head = output.replace("\r\n", "\n").split("\n\n", 1)[0]
    status = ""
    for match in re.finditer(r"^X-Spam-Status:(.*(?:\n[ \t].*)*)", head, re.MULTILINE):
        status = " ".join(match.group(1).split())
    score_match = _STATUS_SCORE_RE.search(status)
    rules: dict[str, SpamRule] = {}
    details = output.rfind("Content analysis details:")
    if details >= 0:
        table = output[details:].replace("\r\n", "\n")
        if score_match is None:
            score_match = re.search(r"\((-?\d+(?:\.\d+)?) points", table)
        started = False
        last = ""
        for line in table.split("\n")[1:]:
            if line.startswith("----"):
                started = True
                continue
            if not started:
                continue
            row = _RULE_ROW_RE.match(line)
            if row:
                last = row.group(2)
                rules[last] = SpamRule(last, float(row.group(1)), row.group(3).strip())
            elif line.startswith((" ", "\t")) and line.strip() and last:
                rule = rules[last]
                rules[last] = SpamRule(rule.name, rule.score,
                                       f"{rule.description} {line.strip()}".strip())
            elif not line.strip() or not line.startswith((" ", "\t")):
                if rules:
                    break
    if score_match is None:
        return None
    tests = _STATUS_TESTS_RE.search(status)
    if tests:
        for name in re.split(r"[,\s]+", tests.group(1)):
            if name and name != "none" and name not in rules:
                rules[name] = SpamRule(name, 0.0)
    ordered = sorted(rules.values(), key=lambda r: (-r.score, r.name))
    return SpamResult(float(score_match.group(1)), ordered)


def _without_boundary(data: bytes) -> bytes:
    match = re.search(rb'boundary="([^"]+)"', data[:8192])
    return data.replace(match.group(1), b"BOUNDARY") if match else data
