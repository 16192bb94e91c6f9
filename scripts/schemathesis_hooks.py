"""Schemathesis hooks for scripts/contract-fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

One refusal of schema-valid input is declared by openapi.json itself and cannot be
put in a schema: a list `cursor` is opaque, and only a `next_cursor` this server
issued for the same listing and sort is taken; any other hex string answers 400
"cursor is not valid for this listing". A fuzzer cannot know which strings those
are, so this drops exactly that failure: a positive-data rejection of a request
that sent a non-empty `cursor`, answered 400 with that message. Every other
failure, on every operation and parameter, still fails the run (issue #18).
"""

import json

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

FOREIGN_CURSOR = "cursor is not valid for this listing"


def _message(response):
    try:
        return json.loads(response.content)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    declared = (
        isinstance(failure, RejectedPositiveData)
        and response.status_code == 400
        and bool((case.query or {}).get("cursor"))
        and _message(response) == FOREIGN_CURSOR
    )
    return not declared
