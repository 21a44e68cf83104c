"""Evidence v1 on the wire: a detection's snapshot image, sent beside the detection.

One MQTT message on ``gridwatch/v1/<station_id>/<source_id>/evidence`` (QoS 1, see
``detectors.topics.evidence_topic``) carries one image: a single line of JSON (the header),
a newline, then the image bytes exactly as the camera wrote them::

    {"schema":"gridwatch.evidence/1","event_id":"st1:cam-1:...","content_type":"image/jpeg",
     "size_bytes":48213,"sha256":"9f86d0..."}\\n<48213 bytes of JPEG>

``event_id`` is the detection's: the centre stores the image under it, serves it at
``/evidence/<event_id>`` and authorizes it by the ticket that holds that detection.
``size_bytes`` and ``sha256`` let the centre refuse a truncated or corrupted image instead
of storing it. The edge builds the message once and keeps it in its outbox, so a re-send is
byte-identical; the centre keeps the first copy of an event id and acknowledges repeats.

Both sides use this module: the edge :func:`encode_evidence`, the centre
:func:`parse_evidence`.

>>> message = encode_evidence(event_id="e1", content_type="image/png", image=b"\\x89PNG..")
>>> header, image = parse_evidence(message)
>>> header.event_id, header.size_bytes, image
('e1', 6, b'\\x89PNG..')
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

EVIDENCE_SCHEMA_ID = "gridwatch.evidence/1"
# the header is small; a longer first line is not an evidence message
MAX_HEADER_BYTES = 2048


class EvidenceMessageRejected(ValueError):
    """A payload that is not a valid evidence v1 message.

    Attributes:
        code: ``malformed`` (no header, bad JSON, a header field wrong) or
            ``checksum`` (the bytes do not match ``size_bytes`` / ``sha256``).
        reason: one line naming what is wrong.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class EvidenceHeader(BaseModel):
    """The first line of an evidence message."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True,
                              populate_by_name=True)

    schema_: Literal["gridwatch.evidence/1"] = Field(alias="schema")
    event_id: Annotated[str, Field(min_length=1, max_length=128)]
    content_type: Annotated[str, Field(min_length=1, max_length=100)]
    size_bytes: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


# what the centre accepts by default, by their first bytes (the content type is what the
# image is, not what a file name says)
_SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))


def image_content_type(image: bytes) -> str | None:
    """``image/jpeg`` or ``image/png`` from the image's first bytes, else None."""
    for magic, content_type in _SIGNATURES:
        if image.startswith(magic):
            return content_type
    return None


def encode_evidence(*, event_id: str, content_type: str, image: bytes) -> bytes:
    """The wire message for one image (header line + ``\\n`` + image bytes)."""
    header = EvidenceHeader.model_validate({
        "schema": EVIDENCE_SCHEMA_ID, "event_id": event_id, "content_type": content_type,
        "size_bytes": len(image), "sha256": hashlib.sha256(image).hexdigest()})
    line = json.dumps(header.model_dump(by_alias=True), separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")
    return line + b"\n" + image


def parse_evidence(payload: bytes | bytearray) -> tuple[EvidenceHeader, bytes]:
    """Split and check a wire message; returns the header and the image bytes.

    Raises:
        EvidenceMessageRejected: the payload is not evidence v1, or its image is not the
            one the header describes.
    """
    data = bytes(payload)
    end = data.find(b"\n", 0, MAX_HEADER_BYTES + 1)
    if end < 0:
        raise EvidenceMessageRejected(
            "malformed", f"expected a JSON header line of at most {MAX_HEADER_BYTES} bytes "
                         f"followed by a newline and the image")
    try:
        fields = json.loads(data[:end])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvidenceMessageRejected("malformed", f"header is not JSON: {exc}") from None
    try:
        header = EvidenceHeader.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'header'}: {err['msg']}"
            for err in exc.errors())
        raise EvidenceMessageRejected("malformed", problems) from None
    image = data[end + 1:]
    if len(image) != header.size_bytes:
        raise EvidenceMessageRejected(
            "checksum", f"header says {header.size_bytes} image bytes, got {len(image)}")
    if hashlib.sha256(image).hexdigest() != header.sha256:
        raise EvidenceMessageRejected("checksum", "image bytes do not match the header's "
                                                  "sha256")
    return header, image
