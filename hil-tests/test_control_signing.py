"""The worked signing example of docs/mqtt.md §10 (issue "fee control", acceptance): the program
in the page is run as it is, with the PyPI `cryptography` library (the billing core's side),
and prints exactly the output the page shows. The daemon's own test
(`control::tests::the_signed_example_in_the_docs_verifies_and_a_changed_byte_does_not`) verifies
that output with the gateway's verifier, so the page, the library and meterd agree.

Also checked: the message the example makes is a valid `meterd.command.v1` (its outer schema,
and its body against the schema's `contentSchema`), and `make_command` signs the exact text it
sends (verified here with the library's public key).
"""
import base64
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "mqtt.md"


def block(marker: str) -> str:
    """The fenced block right after `marker` in docs/mqtt.md."""
    text = DOC.read_text()
    after = text[text.index(marker):]
    start = after.index("```")
    body = after[start:]
    body = body[body.index("\n") + 1:]
    return body[: body.index("```")]


def test_the_docs_example_runs_and_prints_what_the_page_shows(tmp_path):
    program = tmp_path / "sign_command.py"
    program.write_text(block("<!-- sign_command.py -->"))
    out = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out == block("<!-- sign_command.out -->")


def test_the_example_message_is_a_valid_command_signed_over_its_body(tmp_path):
    program = tmp_path / "sign_command.py"
    program.write_text(block("<!-- sign_command.py -->"))
    sys.path.insert(0, str(tmp_path))
    try:
        import sign_command  # noqa: E402 (the page's program, as a module)
    finally:
        sys.path.remove(str(tmp_path))
    # Non-ASCII text in a body is signed as UTF-8, as sent.
    body = {"command_id": "c-ü-1", "gateway": "gw-01", "meter": "000000123456",
            "action": "alarm", "issued_at": "2026-12-07T08:00:00Z",
            "not_after": "2026-12-07T08:10:00Z"}
    message = json.loads(sign_command.make_command(body))
    schema = json.loads((ROOT / "docs" / "schema" / "command.v1.json").read_text())
    jsonschema.validate(message, schema)
    jsonschema.validate(json.loads(message["body"]),
                        schema["properties"]["body"]["contentSchema"])
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(sign_command.public_key_b64()))
    public.verify(base64.b64decode(message["signature"]), message["body"].encode("utf-8"))
    assert json.loads(message["body"]) == body
