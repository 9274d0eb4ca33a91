"""Reading back the DOT text core.graph writes: its node lines, its quoted
strings, and whether it is well formed."""

import re

NODE = re.compile(r'^  (\w+) \[label="((?:[^"\\]|\\.)*)", fillcolor="(\w+)"', re.M)
# every quoted string of the DOT text: escaped quotes and backslashes, no raw newline
QUOTED = re.compile(r'"((?:[^"\\\n]|\\[^\n])*)"')


def unquote(text):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def well_formed(dot):
    """No quote left open, no raw newline inside a string, and braces balance."""
    outside = QUOTED.sub("", dot)
    assert '"' not in outside, outside
    assert outside.count("{") == outside.count("}") == 1
