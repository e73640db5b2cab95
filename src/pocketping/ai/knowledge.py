"""The site's own documents, split into passages and indexed for full-text search.

SQLite's FTS5 (in the standard library's sqlite3) ranks passages with BM25, weighting a word in
a title above one in the text; the Porter stemmer lets "refund" find "refunds". The index lives
in memory and is rebuilt by :meth:`reload`.
"""

from __future__ import annotations

import glob
import logging
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInput

log = logging.getLogger("pocketping.ai")

#: Passages are cut at paragraph breaks to about this many characters.
PASSAGE_CHARS = 1200
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_WORD = re.compile(r"\w{2,}", re.UNICODE)


@dataclass(frozen=True)
class Passage:
    """A piece of one document: its title (the document's, and the section's), text and URL."""

    title: str
    text: str
    url: str | None
    source: str


def read_document(path: Path) -> list[Passage]:
    """A Markdown or text file as passages. An optional front matter (``---`` lines around
    ``url: ...`` and ``title: ...``), or a first line ``url: ...``, gives its link; its first
    heading (else its file name) its title."""
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    url, title = None, None
    lines = text.split("\n")
    if lines and lines[0].strip() == "---" and "---" in (line.strip() for line in lines[1:]):
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
        for line in lines[1:end]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "url":
                url = value.strip() or None
            elif key.strip().lower() == "title":
                title = value.strip() or None
        lines = lines[end + 1 :]
    elif lines and lines[0].lower().startswith("url:"):
        url = lines[0][4:].strip() or None
        lines = lines[1:]
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in lines:
        heading = _HEADING.match(line)
        if heading:
            if title is None and len(heading.group(1)) == 1:
                title = heading.group(2)
                continue
            sections.append((heading.group(2), []))
        else:
            sections[-1][1].append(line)
    title = title or path.stem.replace("-", " ").replace("_", " ")
    out: list[Passage] = []
    for section, body in sections:
        name = f"{title} › {section}" if section else title
        for chunk in _chunks("\n".join(body)):
            out.append(Passage(title=name, text=chunk, url=url, source=str(path)))
    return out


def _chunks(text: str) -> list[str]:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    chunks: list[str] = []
    current = ""
    for p in paragraphs:
        if current and len(current) + len(p) > PASSAGE_CHARS:
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{p}" if current else p
        while len(current) > PASSAGE_CHARS * 2:  # one huge paragraph
            chunks.append(current[:PASSAGE_CHARS])
            current = current[PASSAGE_CHARS:]
    if current:
        chunks.append(current)
    return chunks


class Knowledge:
    """Passages from ``patterns`` (file paths or globs, relative to the working directory),
    searchable with :meth:`search`."""

    def __init__(self, patterns: Sequence[str]) -> None:
        if isinstance(patterns, str) or not all(isinstance(p, str) and p.strip() for p in patterns):
            raise InvalidInput('knowledge must be a list of file paths or globs, such as ["docs/faq.md", "help/*.md"]')
        self.patterns = list(patterns)
        self.passages: list[Passage] = []
        self._db = self._index([])
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        found: list[Path] = []
        for pattern in self.patterns:
            if glob.has_magic(pattern):
                matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
                if not matches:
                    log.warning("knowledge pattern %r matches no file", pattern, extra={"session_id": None})
                found += matches
            elif Path(pattern).is_file():
                found.append(Path(pattern))
            else:
                raise InvalidInput(f"knowledge file {pattern!r} does not exist (from {Path.cwd()})")
        return list(dict.fromkeys(found))

    def load(self) -> int:
        """(Re-)read every file; returns the number of passages. The old index serves until
        the new one is built."""
        passages = [p for path in self.files() for p in read_document(path)]
        db = self._index(passages)
        with self._lock:
            old, self._db, self.passages = self._db, db, passages
        old.close()
        return len(passages)

    @staticmethod
    def _index(passages: list[Passage]) -> sqlite3.Connection:
        db = sqlite3.connect(":memory:", check_same_thread=False)
        tokenizer = "porter unicode61 remove_diacritics 2"
        db.execute(f"CREATE VIRTUAL TABLE passages USING fts5(title, text, tokenize='{tokenizer}')")
        db.executemany(
            "INSERT INTO passages (rowid, title, text) VALUES (?, ?, ?)",
            [(i, p.title, p.text) for i, p in enumerate(passages)],
        )
        db.commit()
        return db

    def search(self, query: str, limit: int = 4) -> list[Passage]:
        """The best passages for ``query`` (any of its words; BM25, titles weighted double)."""
        words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:32]
        if not words:
            return []
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        with self._lock:
            rows = self._db.execute(
                "SELECT rowid FROM passages WHERE passages MATCH ? ORDER BY bm25(passages, 2.0, 1.0) LIMIT ?",
                (match, limit),
            ).fetchall()
            return [self.passages[r[0]] for r in rows]
