"""The output-file ``filePattern`` glob, as the Batch REST reference defines it (pure functions).

* ``*`` matches any run of characters within one name, ``?`` one character, ``[abc]``/``[a-c]`` one of a
  set, ``[!abc]`` one outside it; ``abc[*]`` escapes a wildcard.
* ``**`` as a whole segment matches any number of directories (zero included).
* ``{a,b}`` alternatives (nesting allowed) are expanded first; the REST text does not list them but the issue
  and common glob dialects do.
* Names starting with ``.`` are not matched by a wildcard unless the pattern segment itself starts with ``.``
  (``*.gif`` skips ``.a.gif``; ``.*.gif`` finds it); ``**`` does not descend into dot-directories.
* Linux rules: only ``/`` separates directories, ``$VAR``/``${VAR}`` are expanded from the task environment
  before matching (unknown names stay as written).

A pattern splits into a *base* (its leading segments without wildcards: relative to the working directory,
``..`` or absolute allowed) and the wildcard segments matched below it. The matched file's path relative to the
base is what destination naming keeps under ``path``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_ENV = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand_env(pattern: str, env: Mapping[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from ``env``; an unknown name is left as written."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, m.group(0))

    return _ENV.sub(sub, pattern)


def _class_end(p: str, i: int) -> int:
    """Index of the ``]`` closing the class opened at ``p[i] == '['``, or -1."""
    j = i + 1
    if j < len(p) and p[j] == "!":
        j += 1
    if j < len(p) and p[j] == "]":
        j += 1
    while j < len(p) and p[j] != "]":
        j += 1
    return j if j < len(p) else -1


def expand_braces(pattern: str) -> list[str]:
    """``a{b,c{d,e}}f`` → ``abf``, ``acdf``, ``acef``; braces without a top-level comma stay literal."""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            end = _class_end(pattern, i)
            i = end + 1 if end > 0 else i + 1
            continue
        if c == "{":
            depth, j, commas = 0, i, []
            while j < len(pattern):
                if pattern[j] == "[":
                    end = _class_end(pattern, j)
                    if end > 0:
                        j = end + 1
                        continue
                if pattern[j] == "{":
                    depth += 1
                elif pattern[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                elif pattern[j] == "," and depth == 1:
                    commas.append(j)
                j += 1
            if j < len(pattern) and commas:
                head, tail = pattern[:i], pattern[j + 1 :]
                bounds = [i, *commas, j]
                out: list[str] = []
                for a, b in zip(bounds, bounds[1:], strict=False):
                    for alt in expand_braces(pattern[a + 1 : b]):
                        out.extend(expand_braces(head + alt + tail))
                return list(dict.fromkeys(out))
        i += 1
    return [pattern]


def has_wildcard(segment: str) -> bool:
    for i, c in enumerate(segment):
        if c in "*?":
            return True
        if c == "[" and _class_end(segment, i) > 0:
            return True
    return False


@lru_cache(maxsize=1024)
def _segment_regex(segment: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := _class_end(segment, i)) > 0:
            body = segment[i + 1 : end]
            neg = body.startswith("!")
            if neg:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
            out.append(f"[{'^' if neg else ''}{body}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error:  # e.g. a reversed range [z-a]: matches nothing (parse_output_file refuses it up front)
        return re.compile(r"(?!)")


def check_pattern(pattern: str) -> str | None:
    """Why ``pattern`` cannot match anything (a reversed ``[z-a]`` range, an empty pattern), or ``None``."""
    if not pattern.strip():
        return "the pattern is empty"
    for alt in expand_braces(pattern):
        for seg in alt.split("/"):
            if _segment_regex(seg).pattern == r"(?!)":
                return f"'{seg}' is not a valid pattern (a character range is reversed)"
    return None


def match_segment(segment: str, name: str) -> bool:
    """One pattern segment against one file or directory name (dotfile rule included)."""
    if name.startswith(".") and not segment.startswith("."):
        return False
    return _segment_regex(segment).fullmatch(name) is not None


def match_segments(pattern: list[str] | tuple[str, ...], path: list[str] | tuple[str, ...]) -> bool:
    """Wildcard segments (``**`` allowed) against a relative path's segments."""
    return _match(tuple(pattern), tuple(path))


@lru_cache(maxsize=4096)
def _match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        if _match(rest, path):
            return True
        return bool(path) and not path[0].startswith(".") and _match(pattern, path[1:])
    return bool(path) and match_segment(head, path[0]) and _match(rest, path[1:])


@dataclass(frozen=True)
class SplitPattern:
    """``base`` (no wildcards; '' = the working directory) and the wildcard ``segments`` under it."""

    base: str
    segments: tuple[str, ...]

    @property
    def literal(self) -> bool:
        return not self.segments


def split_pattern(pattern: str) -> SplitPattern:
    absolute = pattern.startswith("/")
    parts = [s for s in pattern.split("/") if s not in ("", ".")]
    k = 0
    while k < len(parts) and not has_wildcard(parts[k]):
        k += 1
    base = "/".join(parts[:k])
    if absolute:
        base = "/" + base
    return SplitPattern(base, tuple(parts[k:]))


def match(pattern: str, relative_path: str) -> bool:
    """Does ``relative_path`` (relative to the working directory) match ``pattern``? Braces included."""
    rel = [s for s in relative_path.split("/") if s not in ("", ".")]
    for alt in expand_braces(pattern):
        sp = split_pattern(alt)
        base = [s for s in sp.base.split("/") if s]
        if sp.literal:
            if base == rel:
                return True
        elif rel[: len(base)] == base and match_segments(sp.segments, rel[len(base) :]):
            return True
    return False


# --- the file system walk (the thin I/O shell) ---------------------------------------------------------------


@dataclass(frozen=True)
class Matched:
    """A file found by a pattern: where it is, its path below the pattern's base, and if it was literal."""

    path: Path
    relative: str
    literal: bool


def _walk(base: Path, segments: tuple[str, ...]) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """Regular files under ``base`` whose relative segments match (dot-dirs pruned, dir symlinks not followed)."""
    max_depth = None if "**" in segments else len(segments)
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = Path(dirpath).relative_to(base).parts
        depth = len(rel_dir)
        if max_depth is not None and depth + 1 >= max_depth:
            dirnames[:] = []
        if max_depth is not None and depth + 1 > max_depth:
            continue
        # a dot-directory is entered only when some segment names it explicitly
        dirnames[:] = [
            d for d in dirnames if not d.startswith(".") or any(s.startswith(".") for s in segments)
        ]
        for f in filenames:
            rel = (*rel_dir, f)
            if match_segments(segments, rel):
                p = Path(dirpath, f)
                if p.is_file():
                    yield p, rel


def find_files(pattern: str, working_dir: Path, env: Mapping[str, str]) -> list[Matched]:
    """Every regular file ``pattern`` names, relative patterns resolved against ``working_dir``."""
    found: dict[Path, Matched] = {}
    alternatives = expand_braces(expand_env(pattern, env))
    for alt in alternatives:
        sp = split_pattern(alt)
        base = Path(sp.base) if sp.base.startswith("/") else working_dir / sp.base
        base = Path(os.path.normpath(base))
        if sp.literal:
            if base.is_file():
                found.setdefault(base, Matched(base, base.name, len(alternatives) == 1))
            continue
        if not base.is_dir():
            continue
        for p, rel in _walk(base, sp.segments):
            found.setdefault(p, Matched(p, "/".join(rel), False))
    return sorted(found.values(), key=lambda m: str(m.path))
