"""`run_operator` runs an operator's command in the test's process, beside
the session's server: what the command writes is the command's alone, as it
is when an operator runs it in a process of its own."""

from __future__ import annotations

import logging
import threading

from tests.conftest import ServerThread, run_operator


def test_an_operator_command_run_beside_the_server_writes_none_of_the_servers_log_lines(
    server: ServerThread, migrated_database_url: str
) -> None:
    """The server's checkpointer logged an ERROR of another test's tenant while
    `tenant erase` ran; the command's configured logging wrote it on the
    command's stderr, and a test comparing that stderr whole failed (CI of
    d78d7481). The server's loop logs throughout the command here."""
    logger = logging.getLogger("sealtrail_server.integrity.checkpointer")
    logged = threading.Event()
    stop = threading.Event()

    def log_on_the_servers_loop() -> None:
        logger.error("a line of the server's, not of the command's")
        logged.set()
        if not stop.is_set():
            server.loop.call_later(0.001, log_on_the_servers_loop)

    server.loop.call_soon_threadsafe(log_on_the_servers_loop)
    assert logged.wait(10)
    try:
        ran = run_operator(migrated_database_url, "tenant", "list")
        logged.clear()
        assert logged.wait(10)  # still logging as the command ended
    finally:
        stop.set()
    assert ran.exit_code == 0, ran.output
    assert "a line of the server's" not in ran.stderr
