"""Schemathesis hooks for scripts/contract-fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

One hook keeps long polls short (map_body, at the end). Three refusals of schema-valid input are declared by openapi.json itself and
cannot be put in a schema, because they depend on data or earlier requests the
fuzzer cannot know:

- a list `cursor` is opaque, and only a `next_cursor` this server issued for the
  same listing and sort is taken; any other hex string answers 400 "cursor is not
  valid for this listing";
- a task's `depends_on` must name existing tasks of the same project, not the task
  itself, and form no cycle (SPEC §5a); anything else answers 422
  validation_failed with exactly one detail for the field `depends_on` saying
  which rule it broke;
- an `Idempotency-Key` already used (within 24 h, by the same API key) with a
  different method, path, query or body answers 422 idempotency_mismatch (SPEC
  §5a). Generated keys repeat (short strings are the fuzzer's favourites), so a
  request that sent one may meet this refusal.

This drops exactly those failures: a positive-data rejection with that status and
that message or detail. Every other failure, on every operation and parameter,
still fails the run (issue #18).
"""

import json
import re

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

FOREIGN_CURSOR = "cursor is not valid for this listing"
# The problems of `store::queue::check_dependencies`, and nothing else.
DEPENDENCY_PROBLEM = re.compile(
    r"a task cannot depend on itself"
    r"|task [0-9]+ is not a task of this project"
    r"|the dependencies would form a cycle"
)


def _error(response):
    try:
        return json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return None


def _foreign_cursor(case, response, error):
    return (
        response.status_code == 400
        and bool((case.query or {}).get("cursor"))
        and error.get("message") == FOREIGN_CURSOR
    )


def _unknown_dependency(case, response, error):
    details = error.get("details") or []
    return (
        response.status_code == 422
        and error.get("code") == "validation_failed"
        and isinstance(case.body, (dict, list))
        and len(details) == 1
        and details[0].get("field") == "depends_on"
        and DEPENDENCY_PROBLEM.fullmatch(details[0].get("problem") or "") is not None
    )


def _reused_key(case, response, error):
    return (
        response.status_code == 422
        and error.get("code") == "idempotency_mismatch"
        and any(k.lower() == "idempotency-key" for k in (case.headers or {}))
    )


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    if not isinstance(failure, RejectedPositiveData):
        return True
    error = _error(response)
    if not isinstance(error, dict):
        return True
    declared = any(
        rule(case, response, error)
        for rule in (_foreign_cursor, _unknown_dependency, _reused_key)
    )
    return not declared


def _short_wait(body):
    if isinstance(body, dict):
        wait = body.get("wait_seconds")
        number = isinstance(wait, (int, float)) and not isinstance(wait, bool)
        if number and 1 < wait <= 60 and wait == int(wait):
            body["wait_seconds"] = 1
    return body


@schemathesis.hook
def map_body(ctx, body):
    """A long-poll claim waits up to `wait_seconds` (≤ 60) on an empty queue (SPEC §9):
    valid waits above 1 s become 1 s, so a run is not spent waiting. Invalid values are
    left as they are (the negative phase still sends them)."""
    return _short_wait(body)


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """The same for the cases no generation hook sees (examples, coverage, stateful)."""
    _short_wait(case.body)
