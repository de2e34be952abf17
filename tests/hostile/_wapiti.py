"""Run Debian's wapiti 3.0.4 with its ``-x`` (exclude) option working on Python 3.11.

Debian 12's wapiti builds each exclusion as ``re.compile(pattern + r"\\Z(?ms)")``,
and Python 3.11 refuses a global flag that is not at the start of the
expression, so any ``-x`` crashes the scan.  This runs the same entry point
with that one function replaced by the same translation, flags first.  Run
it with the interpreter wapiti is installed for (``/usr/bin/python3``).
"""

import re
import sys

import wapitiCore.net.crawler as crawler
from wapitiCore.main.wapiti import wapiti_main


def wildcard_translate(pattern: str) -> "re.Pattern[str]":
    """``*`` matches anything; every other character stands for itself."""
    return re.compile("(?ms)" + ".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z")


crawler.wildcard_translate = wildcard_translate

if __name__ == "__main__":
    sys.argv[0] = "wapiti"
    sys.exit(wapiti_main())
