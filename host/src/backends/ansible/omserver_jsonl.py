# OMServer's stdout callback for ansible's ad-hoc CLI: one JSON object per line for each host result, written the
# moment the result arrives so that the server can report every host as it finishes. Shipped inside the omserver
# binary and written next to each call's inventory; see host/src/backends/ansible/mod.rs.
from __future__ import annotations

DOCUMENTATION = """
    name: omserver_jsonl
    type: stdout
    short_description: one JSON line per host result, for OMServer
    description:
        - Prints {"host", "status", "rc", "stdout", "stderr", "msg", "changed"} per host result.
        - Each text is cut at OMSERVER_OUTPUT_LIMIT bytes; the number of bytes cut is in "<name>_cut".
"""

import json
import os
import sys

from ansible.plugins.callback import CallbackBase


def _limit():
    try:
        return max(0, int(os.environ.get("OMSERVER_OUTPUT_LIMIT", "1048576")))
    except ValueError:
        return 1048576


def _capped(value, limit):
    """The value as UTF-8 text of at most `limit` bytes, and how many bytes were cut."""
    if value is None:
        return "", 0
    if not isinstance(value, str):
        value = str(value)
    # Module output that was not UTF-8 arrives with surrogate escapes; json would pass them on as lone
    # surrogates, which are not valid in JSON text. Turn them back into bytes, then replace what is invalid.
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = value.encode("utf-8", "replace")
    kept = data[:limit].decode("utf-8", "ignore")
    return kept, len(data) - len(kept.encode("utf-8"))


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "omserver_jsonl"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._output_limit = _limit()

    def _emit(self, result, status):
        # ansible-core 2.19 passes a CallbackTaskResult (.host, .result); older releases a TaskResult (._host, ._result).
        host = getattr(result, "host", None) or result._host
        data = getattr(result, "result", None)
        if not isinstance(data, dict):
            data = result._result
        line = {"host": host.get_name(), "status": status, "changed": bool(data.get("changed", False))}
        rc = data.get("rc")
        if isinstance(rc, int) and not isinstance(rc, bool):
            line["rc"] = rc
        msg = data.get("msg")
        if status != "ok":
            # A module that crashed says why only in these.
            extra = [str(data[k]) for k in ("module_stderr", "module_stdout", "exception") if data.get(k)]
            if extra:
                msg = "\n".join([str(msg or "")] + extra).strip()
        for key, value in (("stdout", data.get("stdout")), ("stderr", data.get("stderr")), ("msg", msg)):
            text, cut = _capped(value, self._output_limit)
            line[key] = text
            line[key + "_cut"] = cut
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def v2_runner_on_ok(self, result):
        self._emit(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._emit(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._emit(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self._emit(result, "skipped")
