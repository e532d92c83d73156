"""schemathesis hooks for host/tests/contract.rs (loaded through SCHEMATHESIS_HOOKS).

The run revokes tokens by id (DELETE /api/tokens/{id}, POST /api/tokens/{id}/revoke) with ids it makes up, and
small ids are the tokens the run itself authenticates with: revoking one would turn every later request into a
401 and hide the rest of the run. The ids listed in OMSERVER_ST_KEEP_TOKENS are sent as -1 instead (a well-formed
id that names no token), so the request is still made and still checked.
"""

import os

import schemathesis

# Compared as text: a generated id may come as 2 or as "2".
KEEP = {i.strip() for i in os.environ.get("OMSERVER_ST_KEEP_TOKENS", "").split(",") if i.strip()}


@schemathesis.hook
def before_call(context, case, kwargs):
    if not case.operation.path.startswith("/api/tokens/{id}"):
        return
    parameters = case.path_parameters or {}
    if str(parameters.get("id")).strip() in KEEP:
        parameters["id"] = -1
