#!/usr/bin/env python3
"""Build the embedded multi-domain text corpus shipped in ``adaptive_data/data/embedded/``.

The corpus is made of real text taken from pinned Debian (bookworm) packages. Nothing is
installed: each package is fetched with ``apt-get download NAME=VERSION`` and unpacked with
``dpkg -x`` into a work directory, then split into documents that are natural units:

================  =====================================  ========================================
domain            Debian binary package(s)               one document is
================  =====================================  ========================================
computing         dict-foldoc                            one FOLDOC entry (dictd format)
dictionary        dict-gcide                             one GCIDE entry (dictd format)
fortunes          fortunes, fortunes-min                 one English fortune (split at ``%``)
jargon            dict-jargon                            one Jargon File entry (dictd format)
manpages          manpages, manpages-dev                 one ``.SH`` section of a man page (troff)
python            libpython3.11-minimal, -stdlib         one top-level function or class (``ast``)
russian           fortunes-ru                            one Russian fortune (UTF-8, split at ``%``)
wordnet           dict-wn                                one WordNet 3.0 entry (dictd format)
================  =====================================  ========================================

The pinned versions are in ``PACKAGES`` below (Debian 12 "bookworm"). The Python licence is
read from libpython3.11-minimal's copyright file (libpython3.11-stdlib's doc directory links
there), the man pages' from that of manpages (manpages-dev links there).

Usage (as root on a Debian bookworm machine, or any machine whose apt sources reach bookworm)::

    apt-get update
    python scripts/build_embedded_corpus.py                # download, extract, write
    python scripts/build_embedded_corpus.py --workdir /tmp/debsrc   # keep/reuse the .debs
    python scripts/build_embedded_corpus.py --check        # rebuild in memory, compare

``--workdir`` keeps the downloaded ``.deb`` files and their extracted trees; a later run with the
same directory reuses them (no network needed). ``--check`` writes nothing and exits non-zero
when the freshly built text differs from the shipped files (it compares the sha256 of the
uncompressed JSON lines, which does not depend on the xz library version).

If a pinned version has left the Debian mirrors (security updates replace the previous one),
fetch the same ``.deb`` from https://snapshot.debian.org/ into ``--workdir`` and rerun; the
script then finds ``NAME_VERSION_ARCH.deb`` there and does not call apt. Changing a version
in ``PACKAGES`` changes the corpus; the script then bumps ``corpus_revision`` in the manifest
(which the TFDS builder turns into its dataset version, so prepared caches are not reused).

Output, all deterministic for the same package versions (sorted order, fixed xz preset, no
timestamps):

* ``<domain>.jsonl.xz``: one JSON object per line, ``{"doc_id", "domain", "text"}``, sorted by
  ``doc_id``; ``doc_id`` is ``"<domain>/<key>#<n>"`` (key: headword, fortune file, man page
  and section, or module path and definition name; n: occurrence number of that key).
* ``manifest.json``: per domain file name, doc count, text bytes, sha256 of the shipped file and
  of its uncompressed content, packages and versions; plus ``corpus_revision``.
* ``PROVENANCE.md``: package, version, licence, what a document is, counts, per domain.

Each domain is capped deterministically (``max_docs`` and ``max_text_bytes`` below): documents
are taken in the order of ``sha256(doc_id)`` until a cap is hit, so the sample does not depend
on file order. Documents are whitespace-stripped, empty ones dropped, exact duplicate texts
within a domain dropped (the first in source order is kept), documents over
``MAX_DOC_BYTES`` of UTF-8 dropped, and all text decoded as UTF-8 with ``errors="replace"``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "adaptive_data" / "data" / "embedded"

# Pinned Debian 12 (bookworm) binary packages: name -> exact version.
PACKAGES: dict[str, str] = {
    "dict-foldoc": "20230119-1",
    "dict-gcide": "0.48.5+nmu2",
    "dict-jargon": "4.4.7-3.1",
    "dict-wn": "1:3.0-37",
    "fortunes": "1:1.99.1-7.3",
    "fortunes-min": "1:1.99.1-7.3",
    "fortunes-ru": "1.52-3.1",
    "manpages": "6.03-2",
    "manpages-dev": "6.03-2",
    "libpython3.11-minimal": "3.11.2-6+deb12u9",
    "libpython3.11-stdlib": "3.11.2-6+deb12u9",
}

XZ_PRESET = 9
MAX_DOC_BYTES = 32 * 1024  # documents longer than this (UTF-8 bytes) are dropped


@dataclasses.dataclass(frozen=True)
class Doc:
    key: str  # headword / file / section; doc_id = f"{domain}/{key}#{n}"
    text: str


@dataclasses.dataclass(frozen=True)
class DomainSpec:
    name: str
    packages: tuple[str, ...]  # packages the text comes from
    source_package: str  # Debian source package name
    licence_package: str  # package whose usr/share/doc/<pkg>/copyright holds the licence
    licence: str  # summary, read from that copyright file
    unit: str  # what one document is
    extract: Callable[[Path], Iterator[Doc]]  # root of the extracted trees -> documents
    max_docs: int
    max_text_bytes: int


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {c: i for i, c in enumerate(_B64)}


def _dictd_number(s: str) -> int:
    """Decodes a dictd index number: base-64 digits, most significant first."""
    value = 0
    for c in s:
        value = value * 64 + _B64_VALUE[c]
    return value


def _is_dictd_metadata(headword: str) -> bool:
    # 00-database-info, 00-database-short, 00databaseurl, 00-gcide-long, 00-web1913-info, ...
    return headword.startswith("00-") or headword.startswith("00database")


def read_dictd(tree: Path, name: str) -> Iterator[Doc]:
    """One document per distinct (offset, length) entry of a dictd database.

    The ``.index`` file has tab-separated columns headword, offset, length (base-64 numbers
    into the uncompressed ``.dict``); the ``.dict.dz`` file is gzip-readable. An entry indexed
    under several headwords is kept once, under the first headword in index order.
    """
    base = tree / "usr" / "share" / "dictd"
    with gzip.open(base / f"{name}.dict.dz", "rb") as f:
        data = f.read()
    seen: set[tuple[int, int]] = set()
    index_lines = (base / f"{name}.index").read_bytes().decode("utf-8", errors="replace")
    for line in index_lines.splitlines():
        cols = line.split("\t")
        if len(cols) < 3:
            continue
        headword = cols[0].strip()
        if not headword or _is_dictd_metadata(headword):
            continue
        span = (_dictd_number(cols[1]), _dictd_number(cols[2]))
        if span in seen:
            continue
        seen.add(span)
        offset, length = span
        text = data[offset : offset + length].decode("utf-8", errors="replace")
        yield Doc(headword, text)


def read_fortune_dir(directory: Path) -> Iterator[Doc]:
    """One document per fortune, in every regular file (no symlinks, no ``.dat``) of a dir."""
    for path in sorted(directory.iterdir()):
        if path.is_symlink() or not path.is_file() or path.suffix in (".dat", ".u8"):
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        entries = re.split(r"^%[ \t]*$", text, flags=re.MULTILINE)
        for i, entry in enumerate(entries):
            # n is the entry's position in the file, so the id stays stable after dedup.
            yield Doc(f"{path.name}#{i}", entry)


def read_manpages(trees: list[Path]) -> Iterator[Doc]:
    """One document per ``.SH`` section of each man page (troff source, sections 1-8).

    The preamble before the first ``.SH`` (copyright comments and ``.TH``) is not a section
    and is skipped; pages that only redirect (``.so``) have no section and yield nothing.
    Symlinked pages (aliases) are skipped.
    """
    pages = []
    for tree in trees:
        man = tree / "usr" / "share" / "man"
        for section_dir in man.glob("man[1-8]"):
            for path in section_dir.iterdir():
                if not path.is_symlink() and path.is_file() and path.name.endswith(".gz"):
                    pages.append((section_dir.name, path))
    for section_name, path in sorted(pages, key=lambda p: (p[0], p[1].name)):
        with gzip.open(path, "rb") as f:
            source = f.read().decode("utf-8", errors="replace")
        page = f"{section_name}/{path.name[: -len('.gz')]}"
        for part in re.split(r"^(?=\.SH\b)", source, flags=re.MULTILINE):
            if not part.startswith(".SH"):
                continue
            heading = part.splitlines()[0][3:].strip().strip('"') or "SECTION"
            yield Doc(f"{page}:{heading}", part)


def read_python_stdlib(trees: list[Path]) -> Iterator[Doc]:
    """One document per top-level function or class of each stdlib module (via ``ast``).

    The text is ``ast.get_source_segment`` of the definition, preceded by its decorators.
    Files that do not parse (none in 3.11, but the check is cheap) are skipped.
    """
    files = {}
    for tree in trees:
        lib = tree / "usr" / "lib" / "python3.11"
        for path in lib.rglob("*.py"):
            if not path.is_symlink() and path.is_file():
                files.setdefault(path.relative_to(lib).as_posix(), path)
    for rel, path in sorted(files.items()):
        source = path.read_bytes().decode("utf-8", errors="replace")
        try:
            module = ast.parse(source, filename=rel)
        except SyntaxError:
            continue
        for node in module.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            segment = ast.get_source_segment(source, node)
            if segment is None:
                continue
            decorators = [ast.get_source_segment(source, d) for d in node.decorator_list]
            if decorators and all(d is not None for d in decorators):
                segment = "".join(f"@{d}\n" for d in decorators) + segment
            yield Doc(f"{rel}:{node.name}", segment)


# --------------------------------------------------------------------------------------------
# Domains
# --------------------------------------------------------------------------------------------


def _tree(root: Path, package: str) -> Path:
    return root / f"x_{package}"


def _fortunes_en(root: Path) -> Iterator[Doc]:
    for pkg in ("fortunes-min", "fortunes"):  # disjoint file sets in one directory
        yield from read_fortune_dir(_tree(root, pkg) / "usr" / "share" / "games" / "fortunes")


def _fortunes_ru(root: Path) -> Iterator[Doc]:
    yield from read_fortune_dir(
        _tree(root, "fortunes-ru") / "usr" / "share" / "games" / "fortunes" / "ru"
    )


_MB = 1_000_000

DOMAIN_SPECS: tuple[DomainSpec, ...] = (
    DomainSpec(
        name="computing",
        packages=("dict-foldoc",),
        source_package="dict-foldoc",
        licence_package="dict-foldoc",
        licence="GFDL-1.1+ (FOLDOC, Copyright 1993 Denis Howe; Debian additions: verbatim-copy "
        "licence by Joey Hess and Robert D. Hilliard)",
        unit="one entry of FOLDOC, the Free On-line Dictionary of Computing (dictd format)",
        extract=lambda root: read_dictd(_tree(root, "dict-foldoc"), "foldoc"),
        max_docs=20000,
        max_text_bytes=6 * _MB,
    ),
    DomainSpec(
        name="dictionary",
        packages=("dict-gcide",),
        source_package="dict-gcide",
        licence_package="dict-gcide",
        licence="GPL-2+ (GCIDE, the GNU Collaborative International Dictionary of English)",
        unit="one entry of GCIDE (dictd format)",
        extract=lambda root: read_dictd(_tree(root, "dict-gcide"), "gcide"),
        max_docs=13000,
        max_text_bytes=5 * _MB,
    ),
    DomainSpec(
        name="fortunes",
        packages=("fortunes-min", "fortunes"),
        source_package="fortune-mod",
        licence_package="fortunes",
        licence="BSD-3-clause (fortune-mod, Copyright 1991 The Regents of the University of "
        "California); cookie files as credited in the copyright file",
        unit="one English fortune (entries separated by lines holding '%')",
        extract=_fortunes_en,
        max_docs=13000,
        max_text_bytes=4 * _MB,
    ),
    DomainSpec(
        name="jargon",
        packages=("dict-jargon",),
        source_package="dict-jargon",
        licence_package="dict-jargon",
        licence="public domain (The Jargon File 4.4.7); Debian packaging GPL-2+",
        unit="one entry of the Jargon File (dictd format)",
        extract=lambda root: read_dictd(_tree(root, "dict-jargon"), "jargon"),
        max_docs=20000,
        max_text_bytes=4 * _MB,
    ),
    DomainSpec(
        name="manpages",
        packages=("manpages", "manpages-dev"),
        source_package="manpages",
        licence_package="manpages",
        licence="per page, mostly Linux-man-pages-copyleft, GPL-2+, BSD variants, Expat "
        "(see the copyright file)",
        unit="one '.SH' section of a Linux man page, sections 1-8 (troff source)",
        extract=lambda root: read_manpages([_tree(root, "manpages"), _tree(root, "manpages-dev")]),
        max_docs=20000,
        max_text_bytes=7 * _MB,
    ),
    DomainSpec(
        name="python",
        packages=("libpython3.11-minimal", "libpython3.11-stdlib"),
        source_package="python3.11",
        licence_package="libpython3.11-minimal",
        licence="PSF-2.0 (Python Software Foundation License Version 2); a few modules under "
        "the additional permissive licences listed in the copyright file",
        unit="one top-level function or class of a Python 3.11 standard-library module "
        "(ast.get_source_segment, decorators included)",
        extract=lambda root: read_python_stdlib(
            [_tree(root, "libpython3.11-minimal"), _tree(root, "libpython3.11-stdlib")]
        ),
        max_docs=20000,
        max_text_bytes=7 * _MB,
    ),
    DomainSpec(
        name="russian",
        packages=("fortunes-ru",),
        source_package="fortunes-ru",
        licence_package="fortunes-ru",
        licence="GPL-2 (fortune-mod-ru, Copyright 2003 Pavel Maryanov); Debian packaging GPL-2+",
        unit="one Russian fortune in UTF-8 Cyrillic (entries separated by lines holding '%')",
        extract=_fortunes_ru,
        max_docs=13000,
        max_text_bytes=4 * _MB,
    ),
    DomainSpec(
        name="wordnet",
        packages=("dict-wn",),
        source_package="wordnet",
        licence_package="dict-wn",
        licence="WordNet 3.0 licence (Princeton University; permissive, notice must be kept); "
        "Debian packaging GPL-2+",
        unit="one WordNet 3.0 entry (dictd format)",
        extract=lambda root: read_dictd(_tree(root, "dict-wn"), "wn"),
        max_docs=13000,
        max_text_bytes=4 * _MB,
    ),
)


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


def _deb_glob_name(name: str, version: str) -> str:
    # apt-get download writes NAME_VERSION_ARCH.deb with ':' in the version escaped as %3a.
    return f"{name}_{version.replace(':', '%3a')}_*.deb"


def fetch_packages(workdir: Path) -> None:
    """Downloads (if absent) and extracts (if absent) every pinned package into ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name, version in sorted(PACKAGES.items()):
        debs = sorted(workdir.glob(_deb_glob_name(name, version)))
        if not debs:
            print(f"downloading {name}={version}", file=sys.stderr)
            subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=workdir, check=True)
            debs = sorted(workdir.glob(_deb_glob_name(name, version)))
        if len(debs) != 1:
            raise RuntimeError(f"expected one .deb for {name}={version} in {workdir}: {debs}")
        tree = _tree(workdir, name)
        if not (tree / ".extracted").exists():
            print(f"extracting {debs[0].name}", file=sys.stderr)
            subprocess.run(["dpkg", "-x", str(debs[0]), str(tree)], check=True)
            (tree / ".extracted").write_text(debs[0].name + "\n")


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _stable_rank(doc_id: str) -> str:
    return hashlib.sha256(doc_id.encode("utf-8")).hexdigest()


def build_domain(spec: DomainSpec, root: Path) -> list[dict[str, str]]:
    """Extracts, cleans, de-duplicates and caps one domain; returns records sorted by doc_id."""
    counts: dict[str, int] = {}
    seen_text: set[str] = set()
    records = []
    for doc in spec.extract(root):
        text = doc.text.strip()
        # Numbering counts every occurrence of a key, so ids don't move when a doc is dropped.
        n = counts.get(doc.key, 0)
        counts[doc.key] = n + 1
        if not text or len(text.encode("utf-8")) > MAX_DOC_BYTES:
            continue
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if digest in seen_text:
            continue
        seen_text.add(digest)
        key = doc.key if "#" in doc.key else f"{doc.key}#{n}"
        records.append({"doc_id": f"{spec.name}/{key}", "domain": spec.name, "text": text})
    ids = [r["doc_id"] for r in records]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"duplicate doc_id in domain {spec.name}")
    # Deterministic cap: take documents in sha256(doc_id) order until a cap is reached.
    chosen = []
    total = 0
    for rec in sorted(records, key=lambda r: _stable_rank(r["doc_id"])):
        size = len(rec["text"].encode("utf-8"))
        if len(chosen) >= spec.max_docs or total + size > spec.max_text_bytes:
            break
        chosen.append(rec)
        total += size
    chosen.sort(key=lambda r: r["doc_id"])
    print(
        f"{spec.name}: {len(records)} docs available, {len(chosen)} kept, {total} text bytes",
        file=sys.stderr,
    )
    return chosen


def encode_jsonl(records: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    for rec in records:
        obj = {"doc_id": rec["doc_id"], "domain": rec["domain"], "text": rec["text"]}
        buf.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
        buf.write("\n")
    return buf.getvalue().encode("utf-8")


def compress(raw: bytes) -> bytes:
    # FORMAT_XZ with a fixed preset and CRC64; xz headers hold no timestamp or file name.
    return lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _content_digest(domains: dict[str, dict]) -> str:
    h = hashlib.sha256()
    for name in sorted(domains):
        h.update(f"{name}:{domains[name]['content_sha256']}\n".encode())
    return h.hexdigest()


def build(root: Path) -> tuple[dict[str, bytes], dict]:
    """Returns ({file name: compressed bytes}, manifest without corpus_revision)."""
    files: dict[str, bytes] = {}
    domains: dict[str, dict] = {}
    for spec in DOMAIN_SPECS:
        records = build_domain(spec, root)
        raw = encode_jsonl(records)
        blob = compress(raw)
        file_name = f"{spec.name}.jsonl.xz"
        files[file_name] = blob
        domains[spec.name] = {
            "file": file_name,
            "num_docs": len(records),
            "text_bytes": sum(len(r["text"].encode("utf-8")) for r in records),
            "file_bytes": len(blob),
            "sha256": _sha256(blob),
            "content_sha256": _sha256(raw),
            "packages": {p: PACKAGES[p] for p in spec.packages},
            "source_package": spec.source_package,
            "licence": spec.licence,
            "unit": spec.unit,
        }
    manifest = {
        "format": "jsonl.xz: one JSON object per line with keys doc_id, domain, text",
        "content_digest": _content_digest(domains),
        "debian_release": "bookworm (Debian 12)",
        "packages": dict(sorted(PACKAGES.items())),
        "max_doc_bytes": MAX_DOC_BYTES,
        "xz_preset": XZ_PRESET,
        "domains": domains,
    }
    return files, manifest


def provenance_markdown(manifest: dict, root: Path | None) -> str:
    lines = [
        "# Provenance of the embedded corpus",
        "",
        "Generated by `scripts/build_embedded_corpus.py` (see its docstring to regenerate);",
        "do not edit by hand. All text comes from Debian 12 (bookworm) binary packages,",
        "unpacked with `dpkg -x`; each licence summary was read from the package's",
        "`usr/share/doc/<package>/copyright`, which remains the authoritative statement.",
        "",
        f"Corpus revision: {manifest['corpus_revision']}; content digest "
        f"`{manifest['content_digest']}`.",
        "",
        'Documents are decoded as UTF-8 with `errors="replace"`, whitespace-stripped,',
        f"non-empty, at most {manifest['max_doc_bytes']} bytes of UTF-8, de-duplicated by exact",
        "text within a domain, and capped per domain (`max_docs`, `max_text_bytes` in the",
        "script) by taking documents in `sha256(doc_id)` order.",
        "",
        "| domain | Debian package (version) | source package | licence | a document is | docs "
        "| text bytes | file bytes |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for name, d in sorted(manifest["domains"].items()):
        pkgs = ", ".join(f"`{p}` {v}" for p, v in d["packages"].items())
        lines.append(
            f"| {name} | {pkgs} | {d['source_package']} | {d['licence']} | {d['unit']} "
            f"| {d['num_docs']} | {d['text_bytes']} | {d['file_bytes']} |"
        )
    total_docs = sum(d["num_docs"] for d in manifest["domains"].values())
    total_text = sum(d["text_bytes"] for d in manifest["domains"].values())
    total_file = sum(d["file_bytes"] for d in manifest["domains"].values())
    lines += [
        f"| **total** | | | | | {total_docs} | {total_text} | {total_file} |",
        "",
        "The Python standard-library licence is in `usr/share/doc/libpython3.11-minimal/copyright`",
        "(libpython3.11-stdlib's doc directory is a symlink to it), the man pages' in",
        "`usr/share/doc/manpages/copyright` (manpages-dev's doc directory is a symlink to it);",
        "`fortunes` and `fortunes-min` carry the same copyright file.",
        "",
    ]
    if root is not None:
        lines += ["sha256 of each copyright file read:", ""]
        for pkg in sorted(PACKAGES):
            path = _tree(root, pkg) / "usr" / "share" / "doc" / pkg / "copyright"
            if path.is_file():
                lines.append(f"- `{pkg}`: `{_sha256(path.read_bytes())}`")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "adaptive_data_debsrc",
        help="where .deb files are downloaded and extracted (reused when present)",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    parser.add_argument(
        "--check", action="store_true", help="compare with the shipped files, write nothing"
    )
    args = parser.parse_args(argv)

    fetch_packages(args.workdir)
    files, manifest = build(args.workdir)

    manifest_path = args.out / "manifest.json"
    old = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else None
    if args.check:
        if old is None:
            print("no shipped manifest", file=sys.stderr)
            return 1
        ok = old.get("content_digest") == manifest["content_digest"]
        print("identical content" if ok else "content differs", file=sys.stderr)
        return 0 if ok else 1

    revision = 1
    if old is not None:
        revision = old["corpus_revision"]
        if old.get("content_digest") != manifest["content_digest"]:
            revision += 1
    manifest = {"corpus_revision": revision, **manifest}

    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*.jsonl.xz"):
        if stale.name not in files:
            stale.unlink()
    for file_name, blob in sorted(files.items()):
        (args.out / file_name).write_bytes(blob)
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    manifest_path.write_text(text, encoding="utf-8")
    (args.out / "PROVENANCE.md").write_text(
        provenance_markdown(manifest, args.workdir), encoding="utf-8"
    )
    total = sum(len(b) for b in files.values())
    print(f"wrote {len(files)} files, {total} bytes, to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
