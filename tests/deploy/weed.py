"""SeaweedFS's own command line, to check the flags deploy/ gives it."""

from __future__ import annotations

import re
import subprocess

from tests.support.seaweedfs import weed_binary

WEED_TIMEOUT_S = 60


def assert_weed_accepts(arguments: list[str]) -> None:
    """`weed GLOBAL-FLAGS COMMAND FLAGS`: every flag is one `weed COMMAND -h` lists (the
    pip package is the release of the image's tag), and weed takes the global flags."""
    weed = weed_binary()
    position = next(i for i, arg in enumerate(arguments) if not arg.startswith("-"))
    command = arguments[position]
    shown = subprocess.run(
        [weed, command, "-h"], capture_output=True, text=True, timeout=WEED_TIMEOUT_S
    )
    known = set(re.findall(r"^\s+(-[\w.]+)", shown.stdout + shown.stderr, flags=re.MULTILINE))
    assert known, f"weed {command} -h lists no flags"
    for flag in arguments[position + 1 :]:
        assert flag.split("=")[0] in known, f"weed {command} has no {flag}"
    subprocess.run(
        [weed, *arguments[:position], "version"],
        capture_output=True,
        timeout=WEED_TIMEOUT_S,
        check=True,
    )
