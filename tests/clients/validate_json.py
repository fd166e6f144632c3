#!/usr/bin/env python3
"""Validate JSON files against a JSON Schema (draft 7 or the one the schema names).

usage: validate_json.py SCHEMA FILE...

Prints one line per violation (`FILE: path: message`) and exits 1 if there is any, 0 if
every file is valid; 64 on bad usage or unreadable input. Uses `jsonschema`, which the MCP
Python SDK depends on.
"""

import json
import sys

import jsonschema


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"{path}: cannot read: {e}", file=sys.stderr)
        sys.exit(64)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 64
    schema = load(sys.argv[1])
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    failed = False
    for path in sys.argv[2:]:
        for error in sorted(validator.iter_errors(load(path)), key=lambda e: list(e.absolute_path)):
            location = "/".join(str(p) for p in error.absolute_path) or "(root)"
            print(f"{path}: {location}: {error.message}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
