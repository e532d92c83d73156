"""A host that accepts TCP connections and never says a word (a hung sshd, a tarpit): `silent_listener.py ADDRESS
PORT`. Run by testenv/netns.sh inside a namespace. Connections are held open, unread, until the peer closes them."""

import selectors
import socket
import sys


def main() -> None:
    address, port = sys.argv[1], int(sys.argv[2])
    listener = socket.create_server((address, port), backlog=128, reuse_port=False)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    print(f"silent on {address}:{port}", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                continue
            # Read only to notice the peer leaving: what it sent is never answered.
            conn = key.fileobj
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(conn)
                conn.close()


if __name__ == "__main__":
    main()
