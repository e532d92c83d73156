"""Waits until salt-api accepts the test credentials and every named minion answers test.ping through it.

    python3 salt_probe.py URL CREDENTIALS_JSON SECONDS MINION...

CREDENTIALS_JSON is a file holding {"username", "password", "eauth"} (a file, so the secret is never on a command
line). Exits 0 when all is well; otherwise prints the last thing that was wrong and exits 1. Standard library only.
"""

import json
import sys
import time
import urllib.error
import urllib.request


def post(url, body, token=None):
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def probe(url, credentials, minions):
    """None when salt-api and the minions are fine, else what is wrong."""
    try:
        token = post(f"{url}/login", credentials)["return"][0]["token"]
    except urllib.error.HTTPError as e:
        return f"POST {url}/login: HTTP {e.code}"
    except (OSError, KeyError, IndexError, ValueError) as e:
        return f"POST {url}/login: {e}"
    lowstate = [{"client": "local", "tgt": ",".join(minions), "tgt_type": "list", "fun": "test.ping", "timeout": 2}]
    try:
        answers = post(url, lowstate, token)["return"][0]
    except urllib.error.HTTPError as e:
        return f"POST {url}/ test.ping: HTTP {e.code}"
    except (OSError, KeyError, IndexError, ValueError) as e:
        return f"POST {url}/ test.ping: {e}"
    silent = [m for m in minions if answers.get(m) is not True]
    return f"minions not answering test.ping: {', '.join(silent)}" if silent else None


def main():
    url, credentials_file, seconds, *minions = sys.argv[1:]
    with open(credentials_file) as f:
        credentials = json.load(f)
    deadline = time.monotonic() + float(seconds)
    while True:
        problem = probe(url, credentials, minions)
        if problem is None:
            return 0
        if time.monotonic() > deadline:
            print(problem)
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
