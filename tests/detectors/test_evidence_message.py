"""Evidence v1 on the wire: what the edge builds is what the centre parses, and anything
else is refused with a code and a reason."""

from __future__ import annotations

import hashlib
import json

import pytest

from detectors.evidence_message import (
    EvidenceMessageRejected,
    encode_evidence,
    image_content_type,
    parse_evidence,
)

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4  # binary, newlines included


def header(**changes: object) -> bytes:
    fields = {"schema": "gridwatch.evidence/1", "event_id": "st1:cam-1:e1",
              "content_type": "image/jpeg", "size_bytes": len(JPEG),
              "sha256": hashlib.sha256(JPEG).hexdigest(), **changes}
    return json.dumps(fields).encode()


def test_round_trip_keeps_the_bytes_and_is_deterministic() -> None:
    message = encode_evidence(event_id="st1:cam-1:e1", content_type="image/jpeg", image=JPEG)
    assert message == encode_evidence(event_id="st1:cam-1:e1", content_type="image/jpeg",
                                      image=JPEG)  # a re-send is byte-identical
    parsed, image = parse_evidence(message)
    assert image == JPEG
    assert (parsed.event_id, parsed.content_type, parsed.size_bytes) == (
        "st1:cam-1:e1", "image/jpeg", len(JPEG))
    assert message.split(b"\n", 1)[0] == header().replace(b" ", b"")


@pytest.mark.parametrize(("payload", "code", "reason"), [
    (b"\xff\xd8\xff" + b"x" * 3000, "malformed", "expected a JSON header line"),
    (JPEG, "malformed", "header is not JSON"),  # a bare image with a newline byte
    (b"not json\n" + JPEG, "malformed", "header is not JSON"),
    (header(schema="gridwatch.evidence/2") + b"\n" + JPEG, "malformed", "schema:"),
    (header(colour="red") + b"\n" + JPEG, "malformed", "colour: Extra inputs"),
    (header(event_id="") + b"\n" + JPEG, "malformed", "event_id:"),
    (header(sha256="abc") + b"\n" + JPEG, "malformed", "sha256:"),
    (header() + b"\n" + JPEG[:-1], "checksum", f"header says {len(JPEG)} image bytes, got "
                                               f"{len(JPEG) - 1}"),
    (header() + b"\n" + JPEG[:-1] + b"!", "checksum", "do not match the header's sha256"),
    (b"{" + b" " * 3000 + b"}\n" + JPEG, "malformed", "at most 2048 bytes"),
])
def test_bad_messages_are_refused_with_a_code_and_reason(payload: bytes, code: str,
                                                         reason: str) -> None:
    with pytest.raises(EvidenceMessageRejected) as caught:
        parse_evidence(payload)
    assert caught.value.code == code
    assert reason in caught.value.reason


@pytest.mark.parametrize(("image", "expected"), [
    (JPEG, "image/jpeg"), (b"\x89PNG\r\n\x1a\n...", "image/png"), (b"GIF89a", None),
    (b"", None),
])
def test_image_content_type_comes_from_the_bytes(image: bytes, expected: str | None) -> None:
    assert image_content_type(image) == expected
