"""Validates OpenRPC documents against the vendored OpenRPC meta-schema.

Usage: validate_openrpc.py DATA_DIR DOCUMENT.json...

The meta-schema (DATA_DIR/open-rpc-meta-schema/schema.json) refers to the
JSON Schema meta-schema of json-schema-tools by its URL; the vendored copy
(DATA_DIR/json-schema-tools-meta-schema/schema.json) answers that URL, so
nothing is fetched and every param's and result's schema is checked too.
Prints "valid PATH" per document, or every error and exits 1.
"""
import json
import sys

import jsonschema
import referencing
from referencing.jsonschema import DRAFT7


def main():
    data = sys.argv[1]
    with open(f"{data}/open-rpc-meta-schema/schema.json") as f:
        openrpc = json.load(f)
    with open(f"{data}/json-schema-tools-meta-schema/schema.json") as f:
        json_schema = DRAFT7.create_resource(json.load(f))
    registry = referencing.Registry().with_resources(
        [("https://meta.json-schema.tools", json_schema), ("https://meta.json-schema.tools/", json_schema)])
    jsonschema.Draft7Validator.check_schema(openrpc)
    validator = jsonschema.Draft7Validator(openrpc, registry=registry)
    failed = False
    for path in sys.argv[2:]:
        with open(path) as f:
            document = json.load(f)
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        for error in errors:
            failed = True
            print(f"invalid {path}: {list(error.path)}: {error.message}")
        if not errors:
            print(f"valid {path}")
    sys.exit(1 if failed else 0)


main()
