"""`replies` files: read off the event loop, regular files only, every unreadable one a clear error
(a 400 naming it on an admin patch, a ConfigError naming it at startup), never a hang or a 500."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import anthropic
import pytest

from mockserver import canned
from mockserver.admin_client import AdminClient, AdminError
from mockserver.server import MockServer

HELLO = [{"role": "user", "content": "Hello"}]
CANNED = '[[replies]]\ncontains = "Hello"\ntext = "Canned hello."\n'


def refused(server: MockServer, replies: list[str]) -> str:
    """The message of the 400 a patch to `replies` gets; the server's settings stay as they were."""
    with AdminClient(server.url, timeout=5) as admin:
        before = admin.settings()
        with pytest.raises(AdminError) as caught:
            admin.configure(replies=replies)
        assert caught.value.status == 400
        assert admin.settings() == before
    assert not server.state.server_errors  # a 400, not a 500
    return caught.value.message


@pytest.fixture
def fifo(tmp_path: Path):
    path = tmp_path / "replies.toml"
    os.mkfifo(path)
    yield path
    # Had a reader blocked on it (the defect), a writer that opens and closes it lets that reader go;
    # with none, the open fails (ENXIO).
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_a_patch_naming_a_fifo_is_a_400_and_the_server_keeps_answering(start_server, fifo: Path):
    server = start_server()
    assert f"{fifo}: not a regular file" in refused(server, [str(fifo)])
    client = anthropic.Anthropic(api_key="sk", base_url=server.url, max_retries=0, timeout=5)
    assert client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)


def test_a_fifo_inside_a_replies_directory_is_named(start_server, fifo: Path):
    (fifo.parent / "good.toml").write_text(CANNED)
    assert f"{fifo}: not a regular file" in refused(start_server(), [str(fifo.parent)])


def test_a_device_is_refused(start_server):
    assert "/dev/zero: not a regular file" in refused(start_server(), ["/dev/zero"])


def test_a_path_the_file_system_refuses_is_a_400_naming_it(start_server, tmp_path: Path):
    too_long = str(tmp_path / ("a" * 5_000))  # Path.exists raised ENAMETOOLONG: a 500
    assert refused(start_server(), [too_long]) == (
        f"setting 'replies': {too_long} cannot be read (File name too long)"
    )


def test_a_binary_file_is_a_400_naming_it(start_server, tmp_path: Path):
    binary = tmp_path / "replies.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 10)
    message = refused(start_server(), [str(binary)])
    assert f"canned replies {binary}: expected a UTF-8 TOML file" in message and "not UTF-8" in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("replies = 3", "replies is not an array of tables"),
        ("replies = [1, 2]", "replies is not an array of tables"),
        ('[[replies]]\nequals = 5\ntext = "x"', "entry 0: equals must be a string"),
        ('[[replies]]\ncontains = "a"\ntext = ["x"]', "entry 0: text must be a string"),
        ('[[replies]]\ncontains = "a"\ntool = "t"\ninput = 3', "entry 0: input must be a table"),
        ('[[replies]]\ncontains = "a"\ntext = "x"\nstop_reason = [1]', "stop_reason must be a string"),
    ],
)
def test_replies_of_the_wrong_shape_are_a_400_naming_the_file(start_server, tmp_path: Path, text, words):
    path = tmp_path / "replies.toml"
    path.write_text(text)
    message = refused(start_server(), [str(path)])
    assert str(path) in message and words in message


def test_replies_are_read_off_the_event_loop(start_server, tmp_path: Path, monkeypatch):
    path = tmp_path / "replies.toml"
    path.write_text(CANNED)
    server = start_server()
    readers: list[str] = []
    real = canned._read

    def recording(file: Path) -> list[canned.CannedReply]:
        readers.append(threading.current_thread().name)
        return real(file)

    monkeypatch.setattr(canned, "_read", recording)
    with AdminClient(server.url) as admin:
        admin.configure(replies=[str(path)])
    assert readers and not any(name.startswith("mockserver ") for name in readers)  # not the server's
    client = anthropic.Anthropic(api_key="sk", base_url=server.url, max_retries=0)
    reply = client.messages.create(model="claude-opus-4-7", max_tokens=20, messages=HELLO)
    assert reply.content[0].type == "text" and reply.content[0].text == "Canned hello."


def test_a_fifo_in_the_startup_config_is_a_clear_error(tmp_path: Path, fifo: Path):
    config = tmp_path / "mockserver.toml"
    config.write_text(f'replies = ["{fifo}"]\n')
    done = subprocess.run(
        [sys.executable, "-m", "mockserver", "serve", "--port", "0", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert f"canned replies {fifo}: not a regular file" in done.stderr
