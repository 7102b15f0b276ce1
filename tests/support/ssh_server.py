"""A small SSH server (paramiko) for tests: presents a given host key, runs exec requests locally.

No sshd is installed here, and the host-key check under test happens in the real OpenSSH
client, so the server only has to speak SSH: it accepts any public key, runs the requested
command with ``sh -c`` as the test user, streams stdin/stdout/stderr and returns the exit
status.
"""

from __future__ import annotations

import io
import socket
import subprocess
import threading

import paramiko


class _Session(paramiko.ServerInterface):
    def __init__(self) -> None:
        self.command: str | None = None
        self.requested = threading.Event()

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else \
            paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_exec_request(self, channel, command):
        self.command = command.decode()
        self.requested.set()
        return True


class SshServer:
    """Listen on 127.0.0.1:``port`` (0: a free one) presenting ``host_key_pem`` (OpenSSH PEM).

    Use as a context manager; ``port`` is set once started.
    """

    def __init__(self, host_key_pem: str, port: int = 0):
        self.host_key = paramiko.Ed25519Key.from_private_key(io.StringIO(host_key_pem))
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(8)
        self.commands: list[str] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> SshServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        self.sock.close()
        self._thread.join(timeout=10)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(self.host_key)
        session = _Session()
        try:
            transport.start_server(server=session)
            channel = transport.accept(10)
            if channel is None or not session.requested.wait(10) or session.command is None:
                return
            self.commands.append(session.command)
            self._run(channel, session.command)
            transport.join(timeout=10)  # let the client hang up first (else it sees a reset)
        except (paramiko.SSHException, EOFError, OSError):
            return  # the client gave up (e.g. it refused our host key)
        finally:
            transport.close()

    @staticmethod
    def _run(channel: paramiko.Channel, command: str) -> None:
        proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin and proc.stdout and proc.stderr

        def feed() -> None:
            while data := channel.recv(65536):
                proc.stdin.write(data)
            proc.stdin.close()

        def errors() -> None:
            while data := proc.stderr.read1(65536):
                channel.sendall_stderr(data)

        threads = [threading.Thread(target=feed, daemon=True),
                   threading.Thread(target=errors, daemon=True)]
        for thread in threads:
            thread.start()
        while data := proc.stdout.read1(65536):
            channel.sendall(data)
        threads[1].join()
        channel.send_exit_status(proc.wait())
        channel.shutdown_write()
        channel.close()
