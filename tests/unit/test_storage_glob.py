"""The output-file glob (the REST reference's filePattern rules) as pure functions, plus the directory walk."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchyard.storage.glob import expand_braces, expand_env, find_files, match, split_pattern


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        # '*' within one name, zero characters included (the REST text: abc* matches abc and abcdef)
        ("abc*", "abc", True),
        ("abc*", "abcdef", True),
        ("abc*", "ab", False),
        ("*.txt", "out.txt", True),
        ("*.txt", "sub/out.txt", False),
        # '?' exactly one character
        ("file?.log", "file1.log", True),
        ("file?.log", "file10.log", False),
        ("file?.log", "file.log", False),
        # sets, ranges and negation
        ("[abc].txt", "b.txt", True),
        ("[abc].txt", "d.txt", False),
        ("[a-c]x", "cx", True),
        ("[a-c]x", "dx", False),
        ("[!abc].txt", "d.txt", True),
        ("[!abc].txt", "a.txt", False),
        # brackets escape a wildcard
        ("abc[*]", "abc*", True),
        ("abc[*]", "abcd", False),
        ("what[?]", "what?", True),
        # '**' any number of directories, zero included
        ("**/*.txt", "a.txt", True),
        ("**/*.txt", "d1/d2/a.txt", True),
        ("**/*.txt", "d1/a.bin", False),
        ("out/**/r.csv", "out/r.csv", True),
        ("out/**/r.csv", "out/x/y/r.csv", True),
        ("out/**/r.csv", "other/r.csv", False),
        # dotfiles only when named explicitly (the REST example)
        ("*.gif", ".a.gif", False),
        (".*.gif", ".a.gif", True),
        ("**/*.txt", ".hidden/a.txt", False),
        ("*", ".bashrc", False),
        # braces
        ("{a,b}.txt", "a.txt", True),
        ("{a,b}.txt", "b.txt", True),
        ("{a,b}.txt", "c.txt", False),
        ("out.{csv,{json,xml}}", "out.xml", True),
        ("{x}.txt", "{x}.txt", True),  # no comma: literal braces
        # literal paths and the parent directory
        ("result.txt", "result.txt", True),
        ("result.txt", "other.txt", False),
        ("../std*.txt", "../stdout.txt", True),
        ("../std*.txt", "../stderr.txt", True),
        ("../std*.txt", "stdout.txt", False),
        # regex metacharacters are literal
        ("a+b(1).txt", "a+b(1).txt", True),
        ("a.c", "abc", False),
        # a reversed range matches nothing rather than failing
        ("[z-a].txt", "b.txt", False),
    ],
)
def test_match(pattern: str, path: str, expected: bool) -> None:
    assert match(pattern, path) is expected


def test_brace_expansion_nests_and_keeps_classes() -> None:
    assert expand_braces("a{b,c{d,e}}f") == ["abf", "acdf", "acef"]
    assert expand_braces("[{]x") == ["[{]x"]
    assert expand_braces("{a,b}/{1,2}") == ["a/1", "a/2", "b/1", "b/2"]


def test_env_expansion_uses_the_task_environment() -> None:
    env = {"AZ_BATCH_TASK_DIR": "/n/tasks/t1", "X": "x"}
    assert expand_env("$AZ_BATCH_TASK_DIR/stdout.txt", env) == "/n/tasks/t1/stdout.txt"
    assert expand_env("${X}y/*.txt", env) == "xy/*.txt"
    assert expand_env("$UNKNOWN/a", env) == "$UNKNOWN/a"


def test_split_pattern_base_and_wildcards() -> None:
    assert split_pattern("../std*.txt").base == ".."
    assert split_pattern("out/data/**/*.csv").segments == ("**", "*.csv")
    assert split_pattern("/abs/dir/*.txt").base == "/abs/dir"
    assert split_pattern("plain/file.txt").literal


def _tree(root: Path, *names: str) -> None:
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(n)


def test_find_files_walks_the_working_directory(tmp_path: Path) -> None:
    task = tmp_path / "task"
    wd = task / "wd"
    _tree(
        task, "stdout.txt", "stderr.txt", "wd/a.txt", "wd/d/b.txt", "wd/d/e/c.txt", "wd/.h/x.txt", "wd/n.bin"
    )
    rel = {m.relative for m in find_files("**/*.txt", wd, {})}
    assert rel == {"a.txt", "d/b.txt", "d/e/c.txt"}
    std = find_files("../std*.txt", wd, {})
    assert [m.path.name for m in std] == ["stderr.txt", "stdout.txt"]
    assert all(not m.literal for m in std)
    one = find_files("d/b.txt", wd, {})
    assert len(one) == 1 and one[0].literal and one[0].relative == "b.txt"
    env = find_files("$AZ_BATCH_TASK_DIR/stdout.txt", wd, {"AZ_BATCH_TASK_DIR": str(task)})
    assert [m.path for m in env] == [task / "stdout.txt"]
    assert find_files("nothing*.zip", wd, {}) == []
    assert find_files("missing-dir/*.txt", wd, {}) == []
    # a directory is not a file to upload
    assert find_files("d", wd, {}) == []
    assert {m.relative for m in find_files("d/*", wd, {})} == {"b.txt"}
