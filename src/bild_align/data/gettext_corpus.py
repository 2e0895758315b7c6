"""A real German-to-English corpus from this machine's gettext catalogs (task `gettext-de-en`).

    pairs = build_corpus()                 # every usable pair, deterministic on a machine
    split_of("Datei öffnen")               # "train", "validation" or "test", by a hash
    load_split("validation")               # [{"id": ..., "de": ..., "en": ...}, ...]

Debian packages ship German translations of their English messages in
`/usr/share/locale/de/LC_MESSAGES/*.mo`: real text that nobody here wrote. The corpus is built
at run time (nothing is committed): messages are read from every catalog, cleaned (keyboard
accelerators removed), filtered to plain sentences of 3 to 30 words without format
placeholders, markup or paths, sorted and de-duplicated, and split 90/5/5 by a hash of the
German text, so that the same source never lands in two splits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
from functools import lru_cache
from pathlib import Path

from bild_align.errors import UserError

logger = logging.getLogger(__name__)  # notes; the command line shows them on stderr

CATALOG_DIR = Path(os.environ.get("BILD_GETTEXT_DIR", "/usr/share/locale/de/LC_MESSAGES"))
SPLITS = ("train", "validation", "test")
MIN_WORDS, MAX_WORDS = 3, 30

# printf / Python / shell / brace placeholders, markup, entities, paths, URLs, options, escapes
_UNUSABLE = re.compile(
    r"%|\{[^}]*\}|\$\{?\w|<[^>]*>|&\w+;|https?://|www\.|(?:^|\s)[~.]?/\w|\\"
    r"|(?:^|\s)--?\w|@\w+@|`|\||\s{2,}"
)
_ACCELERATOR = re.compile(r"(?<![\w&])[_&](?=\w)")


def read_mo(path: Path) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a compiled catalog, decoded with the charset it declares.

    Plural entries and the header are skipped; a message context is dropped.
    """
    data = path.read_bytes()
    if len(data) < 20:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if endian is None:
        return []
    _, count, originals, translations = struct.unpack(endian + "4I", data[4:20])

    def entry(table: int, index: int) -> bytes:
        length, offset = struct.unpack(
            endian + "2I", data[table + 8 * index : table + 8 * index + 8]
        )
        return data[offset : offset + length]

    raw = [(entry(originals, i), entry(translations, i)) for i in range(count)]
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            match = re.search(rb"charset=([\w-]+)", msgstr)
            if match:
                charset = match.group(1).decode("ascii")
    pairs = []
    for msgid, msgstr in raw:
        if not msgid or b"\x00" in msgid or not msgstr:
            continue
        msgid = msgid.split(b"\x04")[-1]
        try:
            pairs.append((msgid.decode(charset), msgstr.decode(charset)))
        except (UnicodeDecodeError, LookupError):
            continue
    return pairs


def clean(text: str) -> str:
    """Remove keyboard accelerators (_File, &Open) and surrounding whitespace."""
    return _ACCELERATOR.sub("", text).strip()


def usable(english: str, german: str) -> bool:
    if english == german or "\n" in english or "\n" in german or "\t" in english + german:
        return False
    if _UNUSABLE.search(english) or _UNUSABLE.search(german):
        return False
    return all(MIN_WORDS <= len(text.split()) <= MAX_WORDS for text in (english, german))


def split_of(german: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(german.encode("utf-8")).digest()[:4], "big") % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def build_corpus(catalog_dir: Path | None = None) -> list[dict]:
    """Every usable pair, sorted by German text, one English translation per German source."""
    directory = Path(catalog_dir or CATALOG_DIR)
    catalogs = sorted(directory.glob("*.mo")) if directory.is_dir() else []
    if not catalogs:
        raise UserError(
            f"no German gettext catalogs (*.mo) in {directory}: the gettext-de-en task is built "
            "from them. On Debian/Ubuntu they come with the packages themselves (e.g. "
            "`apt-get install coreutils tar wget`) unless translations were purged "
            "(/etc/dpkg/dpkg.cfg.d/excludes); or set BILD_GETTEXT_DIR to a folder of .mo files"
        )
    best: dict[str, str] = {}
    for path in catalogs:
        for english, german in read_mo(path):
            english, german = clean(english), clean(german)
            if usable(english, german) and (german not in best or english < best[german]):
                best[german] = english
    return [
        {"id": hashlib.sha256(german.encode("utf-8")).hexdigest()[:12], "de": german, "en": english}
        for german, english in sorted(best.items())
    ]


@lru_cache(maxsize=4)
def _splits(catalog_dir: str) -> dict[str, list[dict]]:
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    pairs = build_corpus(Path(catalog_dir))
    for pair in pairs:
        splits[split_of(pair["de"])].append(pair)
    sizes = ", ".join(f"{name} {len(rows)}" for name, rows in splits.items())
    logger.info(
        "gettext-de-en: %d German-English pairs from the gettext catalogs in %s (%s)",
        len(pairs),
        catalog_dir,
        sizes,
    )
    return splits


def forget_cached_corpus() -> None:
    """Drop the corpora built so far (they are cached per catalog folder): the next
    `load_split` reads the catalogs again."""
    _splits.cache_clear()


def load_split(split: str, catalog_dir: Path | None = None) -> list[dict]:
    if split not in SPLITS:
        raise UserError(f"gettext-de-en has the splits {', '.join(SPLITS)}, not {split!r}")
    return list(_splits(str(catalog_dir or CATALOG_DIR))[split])
