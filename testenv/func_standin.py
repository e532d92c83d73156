"""A stand-in for Func's minion daemon (funcd), owned by the test suite because Func itself (Python 2 only) cannot be
installed from any registry. It speaks Func's protocol: XML-RPC over HTTPS with mutual TLS, the client's
certificate signed by the certmaster CA, and the two methods the omserver func backend calls:

- command.run(cmd) -> [rc, stdout, stderr]. Like Func, cmd is split on whitespace (str.split()) and run without a
  shell, so an argument holding whitespace cannot be passed whole.
- copyfile.copyfile(path, data_base64, mode, uid, gid) -> 1 copied, 0 unchanged (same bytes and mode already),
  -1 failed. mode, uid and gid may be ints or strings, as with Func (a string mode is octal, as chmod reads it).

Unknown methods and bad arguments come back as XML-RPC faults. Standard library only.

    python3 func_standin.py serve --address A --port P --cert SERVER.cert --key SERVER.pem --ca ca.cert
    python3 func_standin.py check --port P --cert CLIENT.cert --key CLIENT.pem --ca ca.cert ADDRESS,CN,WRONG_NAME...

`check` is what `testenv.sh up` runs, for each stand-in: a mutual-TLS call of command.run must work with the client
certificate and the server certificate's CN as host name, a client without a certificate must be refused, and the
same call under WRONG_NAME must fail certificate verification.
"""

import argparse
import base64
import binascii
import concurrent.futures
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import xmlrpc.client
import xmlrpc.server


class Fault(xmlrpc.client.Fault):
    """Func answered bad calls with faults; code 1 as Func's own server did for exceptions."""

    def __init__(self, message):
        super().__init__(1, message)


def command_run(cmd):
    if not isinstance(cmd, str):
        raise Fault(f"command.run: the command must be a string, not {type(cmd).__name__}")
    argv = cmd.split()
    if not argv:
        raise Fault("command.run: empty command")
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, close_fds=True)
    except OSError as e:
        raise Fault(f"command.run: cannot run {argv[0]!r}: {e.strerror}") from None
    return [done.returncode, text(done.stdout), text(done.stderr)]


def text(output):
    # XML-RPC strings are text; Func sent Python 2 byte strings, which its clients read as UTF-8.
    return output.decode("utf-8", errors="replace")


def as_int(name, value, base=10):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise Fault(f"copyfile.copyfile: {name} must be an int or a string, not {type(value).__name__}")
    try:
        return int(value, base) if isinstance(value, str) else value
    except ValueError:
        raise Fault(f"copyfile.copyfile: {name} {value!r} is not a number") from None


def copyfile(path, data, mode=0o644, uid=0, gid=0, force=None):
    if not isinstance(path, str) or not os.path.isabs(path):
        raise Fault("copyfile.copyfile: the path must be an absolute path string")
    if isinstance(data, xmlrpc.client.Binary):
        content = data.data
    elif isinstance(data, str):
        try:
            content = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise Fault("copyfile.copyfile: the data is not valid base64") from None
    else:
        raise Fault("copyfile.copyfile: the data must be a base64 string")
    mode, uid, gid = as_int("mode", mode, 8), as_int("uid", uid), as_int("gid", gid)
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            same = f.read() == content
        if same and (st.st_mode & 0o7777) == mode and (st.st_uid, st.st_gid) == (uid, gid) and force is None:
            return 0
    except OSError:
        pass
    try:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        # Through a temporary name and a rename, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".copyfile.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.chmod(tmp, mode)
            os.chown(tmp, uid, gid)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        print(f"copyfile {path}: {e}", file=sys.stderr, flush=True)
        return -1
    return 1


class Server(socketserver.ThreadingMixIn, xmlrpc.server.SimpleXMLRPCServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, port, context):
        self.context = context
        super().__init__((address, port), logRequests=False, allow_none=False)

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, on the request's own thread, so a silent client blocks nobody else.
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            print(f"refused {client_address[0]}: {e}", file=sys.stderr, flush=True)
            return
        tls.settimeout(None)
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


def serve(args):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.load_verify_locations(args.ca)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no call
    server = Server(args.address, args.port, context)
    os.chdir("/")  # as funcd, a daemon, ran
    server.register_function(command_run, "command.run")
    server.register_function(copyfile, "copyfile.copyfile")
    print(f"func stand-in listening on {args.address}:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


def call(target, name, with_client_cert=True):
    """command.run("echo ok") on target (address, port, files) verifying the server's certificate as name."""
    address, port, cert, key, ca = target
    context = ssl.create_default_context(cafile=ca)
    if with_client_cert:
        context.load_cert_chain(cert, key)
    raw = socket.create_connection((address, port), timeout=5)
    with context.wrap_socket(raw, server_hostname=name) as tls:
        request = xmlrpc.client.dumps(("echo ok",), "command.run").encode()
        head = b"POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(request)
        tls.sendall(head + request)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    body = answer.split(b"\r\n\r\n", 1)[1]
    return xmlrpc.client.loads(body)[0][0]


FAILURES = (OSError, ssl.SSLError, IndexError, xmlrpc.client.Error)


def check(target, name, wrong_name):
    """None when the stand-in at target behaves, else what is wrong."""
    where = f"{target[0]}:{target[1]}"
    try:
        result = call(target, name)
    except FAILURES as e:
        return f"{where} as {name}: command.run('echo ok') failed: {e}"
    if result != [0, "ok\n", ""]:
        return f"{where}: command.run('echo ok') returned {result!r}"
    try:
        call(target, name, with_client_cert=False)
        return f"{where} answered a client without a certificate"
    except FAILURES:
        pass
    try:
        call(target, wrong_name)
        return f"{where} passed certificate verification as {wrong_name}, not only as its CN {name}"
    except ssl.SSLCertVerificationError:
        pass
    except FAILURES as e:
        return f"{where} as {wrong_name}: expected a certificate verification failure, got {e}"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["serve", "check"])
    parser.add_argument("--port", type=int, default=51234)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--address", help="serve: the address to listen on")
    parser.add_argument("targets", nargs="*", metavar="ADDRESS,CN,WRONG_NAME", help="check: the stand-ins to check")
    args = parser.parse_intermixed_args()
    if args.mode == "serve":
        serve(args)
        return 0
    with concurrent.futures.ThreadPoolExecutor() as pool:
        checks = []
        for spec in args.targets:
            address, name, wrong_name = spec.split(",")
            target = (address, args.port, args.cert, args.key, args.ca)
            checks.append(pool.submit(check, target, name, wrong_name))
        problems = [p for p in (c.result() for c in checks) if p]
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
