"""meta.json: what a block is; layout in docs/block-format.md#meta.

A reader refuses a format version it does not know instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any

from blocks.errors import CorruptBlock

META_FILENAME = "meta.json"
INDEX_FILENAME = "index"
CHUNKS_DIRNAME = "chunks"
FORMAT_VERSION = 1


class Resolution(IntEnum):
    """Sample spacing of a block in milliseconds; RAW keeps every sample."""

    RAW = 0
    FIVE_MINUTES = 300_000
    ONE_HOUR = 3_600_000


@dataclass(frozen=True, slots=True)
class BlockStats:
    """Counts of what a block holds."""

    series: int
    samples: int
    chunks: int
    pages: int
    bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockMeta:
    """Everything about a block that fits in a small JSON object.

    `mint` is inclusive and `maxt` exclusive, in milliseconds, as in Prometheus.
    """

    block_id: str
    tenant: str
    mint: int
    maxt: int
    resolution: Resolution
    level: int
    sources: tuple[str, ...]
    stats: BlockStats
    external_labels: dict[str, str] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        """The meta.json bytes."""
        return (json.dumps(self.to_dict(), indent=2) + "\n").encode()

    def to_dict(self) -> dict[str, Any]:
        """The meta.json document, as the bucket index embeds it."""
        return {
            "version": self.version,
            "ulid": self.block_id,
            "tenant": self.tenant,
            "minTime": self.mint,
            "maxTime": self.maxt,
            "resolution": int(self.resolution),
            "compaction": {"level": self.level, "sources": list(self.sources)},
            "stats": asdict(self.stats),
            "externalLabels": dict(sorted(self.external_labels.items())),
        }

    @classmethod
    def from_json(cls, data: bytes) -> BlockMeta:
        """Parse meta.json; CorruptBlock if it is not one this version can read."""
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise CorruptBlock(f"meta.json unreadable: {exc!r}", obj=META_FILENAME) from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Any) -> BlockMeta:
        """The meta of a parsed meta.json document; CorruptBlock if this version cannot
        read it."""
        try:
            version = doc["version"]
            if version != FORMAT_VERSION:
                raise CorruptBlock(
                    f"block format version {version} is not supported (this reads "
                    f"{FORMAT_VERSION})",
                    block_id=str(doc.get("ulid", "")),
                    obj=META_FILENAME,
                )
            stats = doc["stats"]
            return cls(
                block_id=doc["ulid"],
                tenant=doc["tenant"],
                mint=int(doc["minTime"]),
                maxt=int(doc["maxTime"]),
                resolution=Resolution(doc["resolution"]),
                level=int(doc["compaction"]["level"]),
                sources=tuple(doc["compaction"]["sources"]),
                stats=BlockStats(**{k: int(stats[k]) for k in BlockStats.__slots__}),
                external_labels=dict(doc.get("externalLabels", {})),
                version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptBlock(f"meta.json unreadable: {exc!r}", obj=META_FILENAME) from None
