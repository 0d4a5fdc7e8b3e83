"""Refuse names that cannot work before anything is generated."""

import re
import sys

MODULE = "{{ cookiecutter.module_name }}"
SECTION = "{{ cookiecutter.section }}"

if not re.fullmatch(r"[a-z_][a-z0-9_]*", MODULE):
    sys.exit(f"module_name {MODULE!r} is not a valid lower-case Python module name")
if not SECTION or not SECTION.islower():
    sys.exit(f"section {SECTION!r} must be lower-case: QUERYSTASH keys in capitals are the core's")
