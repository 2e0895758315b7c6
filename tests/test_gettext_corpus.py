"""The gettext-de-en corpus builder on catalogs the test writes itself."""

import struct

import pytest

from bild_align.data import gettext_corpus
from bild_align.data.tasks import get_task, load_rows
from bild_align.errors import UserError


def write_mo(path, pairs, charset="UTF-8"):
    """A GNU .mo catalog with the given (msgid, msgstr) pairs and a charset header."""
    header = f"Content-Type: text/plain; charset={charset}\n"
    entries = sorted([("", header), *pairs])
    ids = [m.encode(charset) for m, _ in entries]
    strs = [t.encode(charset) for _, t in entries]
    count = len(entries)
    originals, translations = 28, 28 + 8 * count
    offset = 28 + 16 * count
    blob, id_table, str_table = b"", [], []
    for table, items in ((id_table, ids), (str_table, strs)):
        for item in items:
            table.append((len(item), offset + len(blob)))
            blob += item + b"\x00"
    data = struct.pack("<7I", 0x950412DE, 0, count, originals, translations, 0, 0)
    for length, position in id_table + str_table:
        data += struct.pack("<2I", length, position)
    path.write_bytes(data + blob)


GOOD = [
    ("Could not open the file.", "Die Datei konnte nicht geöffnet werden."),
    ("The operation was cancelled by the user.", "Der Vorgang wurde vom Benutzer abgebrochen."),
    ("Show hidden files in the list", "Versteckte Dateien in der Liste anzeigen"),
    ("_Save the current document", "Das aktuelle Dokument _speichern"),
] + [(f"Item number {n} was removed", f"Eintrag Nummer {n} wurde entfernt") for n in range(40)]
BAD = [
    ("Cannot open %s for reading", "Kann %s nicht zum Lesen öffnen"),  # placeholder
    ("Unknown option {name} given", "Unbekannte Option {name} angegeben"),  # brace placeholder
    ("<b>Bold</b> text is here", "<b>Fetter</b> Text ist hier"),  # markup
    ("Quit", "Beenden"),  # too short
    ("Read /etc/passwd now please", "Jetzt bitte /etc/passwd lesen"),  # path
    ("Use --force to override this", "Mit --force dies übergehen"),  # option
    ("Same text in both languages", "Same text in both languages"),  # untranslated
    ("Two\nlines are here", "Zwei\nZeilen sind hier"),  # multi-line
]


@pytest.fixture
def catalogs(tmp_path):
    write_mo(tmp_path / "a.mo", GOOD[:20] + BAD)
    # a Latin-1 catalog, and a duplicate source with another translation
    write_mo(
        tmp_path / "b.mo",
        GOOD[20:] + [("Could not open a file.", GOOD[0][1])],
        charset="ISO-8859-1",
    )
    return tmp_path


def test_filtering_cleaning_and_charsets(catalogs):
    pairs = gettext_corpus.build_corpus(catalogs)
    english = {pair["en"] for pair in pairs}
    german = [pair["de"] for pair in pairs]
    assert len(pairs) == len(GOOD)  # every bad pair filtered out, the duplicate source merged
    assert "Save the current document" in english  # accelerator removed
    assert "Das aktuelle Dokument speichern" in german
    assert "Die Datei konnte nicht geöffnet werden." in german  # read from both charsets
    assert german == sorted(german) and len(set(german)) == len(german)
    # one translation per German source, chosen deterministically (the smaller string)
    merged = next(pair for pair in pairs if pair["de"] == GOOD[0][1])
    assert merged["en"] == "Could not open a file."


def test_deterministic_disjoint_splits(catalogs):
    first = {s: gettext_corpus.load_split(s, catalogs) for s in gettext_corpus.SPLITS}
    gettext_corpus.forget_cached_corpus()
    second = {s: gettext_corpus.load_split(s, catalogs) for s in gettext_corpus.SPLITS}
    assert first == second
    sources = [set(p["de"] for p in rows) for rows in first.values()]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert sum(len(rows) for rows in first.values()) == len(GOOD)
    assert len(first["train"]) > len(first["validation"])
    for name, rows in first.items():
        assert all(gettext_corpus.split_of(row["de"]) == name for row in rows)


def test_registered_task_and_clear_errors(catalogs, tmp_path, monkeypatch):
    monkeypatch.setattr(gettext_corpus, "CATALOG_DIR", catalogs)
    rows = load_rows(get_task("gettext-de-en"), "train")
    assert set(rows.column_names) == {"id", "source", "reference"}
    assert len(rows) == len(gettext_corpus.load_split("train", catalogs))
    with pytest.raises(UserError, match="splits train, validation, test"):
        gettext_corpus.load_split("dev", catalogs)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="apt-get install"):
        gettext_corpus.build_corpus(empty)


def test_this_machine_has_a_real_corpus():
    pairs = gettext_corpus.build_corpus()
    assert len(pairs) > 5000
    assert all(3 <= len(p["en"].split()) <= 30 for p in pairs)
