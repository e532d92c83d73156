"""The test environment's mail server: aiosmtpd on loopback, keeping every message it accepts.

Each message is written to MAILDIR as <n>.eml (the bytes received, headers included) and <n>.json (the envelope:
mail_from, rcpt_tos, peer), the .json last, so a reader that sees it can read both. Tests tell their messages
apart by recipient. Run from the venv: python smtp_sink.py --address 127.0.0.1 --port 2525 --maildir DIR
"""

import argparse
import itertools
import json
import os
import signal
import threading

from aiosmtpd.controller import Controller


class Keep:
    def __init__(self, maildir):
        self.maildir = maildir
        self.counter = itertools.count(len([f for f in os.listdir(maildir) if f.endswith(".json")]) + 1)

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        base = os.path.join(self.maildir, f"{n:06d}")
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos, "peer": str(session.peer)}
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    args = parser.parse_args()
    os.makedirs(args.maildir, exist_ok=True)
    controller = Controller(Keep(args.maildir), hostname=args.address, port=args.port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
