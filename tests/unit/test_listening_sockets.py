"""`voiceserver serve --workers N`: one SO_REUSEPORT listening socket per worker, real kernel sockets."""

import socket

import pytest

from voiceserver.server.run import listening_sockets


def test_each_worker_gets_its_own_socket_on_one_port_and_the_kernel_spreads_connections():
    listeners = listening_sockets("127.0.0.1", 0, 2)
    clients = []
    try:
        assert len(listeners) == 2
        port = listeners[0].getsockname()[1]
        assert listeners[1].getsockname()[1] == port
        for listener in listeners:
            listener.setblocking(False)
        for _ in range(64):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        accepted = []
        for listener in listeners:
            count = 0
            while True:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    break
                conn.close()
                count += 1
            accepted.append(count)
        assert sum(accepted) == 64
        # A hash over 64 connections: each socket gets a share (a shared socket would let one take them all).
        assert min(accepted) >= 12, accepted
    finally:
        for sock in clients + listeners:
            sock.close()


def test_a_port_another_server_holds_is_still_refused():
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    try:
        with pytest.raises(OSError):
            listening_sockets("127.0.0.1", other.getsockname()[1], 2)
    finally:
        other.close()
