"""A folder of PDFs -> a folder of markdown: cached by content hash, one bad file never stops the rest.

`<md_dir>/.cache/<sha256>-<converter>.md` holds each conversion, so an unchanged PDF is not converted
again, even after a rename; `<md_dir>/<pdf's path below pdf_dir>.md` is the copy a person reads. Each file is
written atomically, so an interrupted run loses only the PDF in flight.

Which converter reads which page is a plan made before the work, from the facts (a CUDA GPU or not, marker's
models reachable or not, the pages without a text layer): plan_conversion decides for one PDF, plan_line says
it for the folder in one line. A PDF converted without some of its pages (no text layer, no OCR at hand) is
published with those pages named, and not cached, so that a later run with marker at hand fills them in.
"""
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from ..errors import SettingsError
from .files import (NO_TEXT_ADVICE, TEXT_CONVERTER_VERSION, ConversionError, MarkerConverter, PathLike,
                    convert_text_layer, gpu_available, marker_available, marker_models_note, pages_phrase,
                    pages_without_text, splice_pages, split_pages)

REPORT_NAME = "conversion_report.json"
CONVERTERS = ("auto", "marker", "text")


class PdfFolderNotFoundError(SettingsError):
    """The PDF folder (PDF_DIR, --pdf-dir) does not exist."""


@dataclass
class FileResult:
    pdf: str
    status: str  # "converted", "cached", "failed" or "duplicate" (the same text as another PDF, which is used)
    markdown: str = ""
    reason: str = ""  # why it failed, or why pages are left out
    advice: str = ""
    converter: str = ""  # "text", "marker" or "mixed" (text layer, marker's OCR for the pages without one)
    pages_left_out: list[int] = field(default_factory=list)  # no text layer, and no OCR at hand


def shown_name(path: Path, pdf_dir: PathLike) -> str:
    """The file's name as text, with its subfolders below `pdf_dir` ("topic/paper.pdf"); a name that is not valid
    UTF-8 (from an old archive, say) with � in place."""
    return path.relative_to(pdf_dir).as_posix().encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Where(NamedTuple):
    """The folders of a conversion: each PDF's name below pdf_dir, and its markdown at the same place below md_dir."""
    pdf_dir: Path
    md_dir: Path

    def name(self, pdf: Path) -> str:
        return shown_name(pdf, self.pdf_dir)

    def markdown(self, pdf: Path) -> Path:
        return self.md_dir / pdf.relative_to(self.pdf_dir).with_suffix(".md")


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C or a full disk: leave no half-written file behind
        tmp.unlink(missing_ok=True)
        raise


def list_pdfs(pdf_dir: PathLike) -> list[Path]:
    """Every file of the folder and its subfolders (a Zotero library, papers by topic) that claims to be a PDF (by
    name), hidden folders left out; non-PDF content is caught later."""
    pdf_dir = Path(pdf_dir)
    if not pdf_dir.is_dir():
        raise PdfFolderNotFoundError(f"PDF folder not found: {pdf_dir}. Put your papers there or pass --pdf-dir.")
    return sorted(p for p in pdf_dir.rglob("*")
                  if p.suffix.lower() == ".pdf" and (p.is_file() or (p.is_symlink() and not p.exists()))
                  and not any(part.startswith(".") for part in p.relative_to(pdf_dir).parts))


def has_pdfs(pdf_dir: PathLike) -> bool:
    return Path(pdf_dir).is_dir() and bool(list_pdfs(pdf_dir))


# ---------------------------------------------------------------- which converter reads which page

ON_THE_CPU = ("no CUDA GPU, so the text layer wherever there is one (about 20 pages/s on the CPU; marker's models "
              "manage under 0.1 pages/s there)")
ON_A_GPU = "a CUDA GPU and marker's models are at hand, so marker, which reads layouts best, for every page"
OCR = "pages without a text layer go to marker's OCR"
TEXT_ASKED = "--converter text"
MARKER_ASKED = "--converter marker"


@dataclass(frozen=True)
class Plan:
    """How one PDF of `pages` pages is converted: `converter` ("text" or "marker") reads the whole file; of a file
    read by the text converter, marker's OCR reads `ocr_pages` (no text layer) and `missing_pages` (no text layer,
    no OCR at hand) are left out; `reasons` say why."""
    converter: str
    pages: int
    ocr_pages: tuple[int, ...] = ()
    missing_pages: tuple[int, ...] = ()
    reasons: tuple[str, ...] = ()


def plan_conversion(pages_without_text: Sequence[int], total_pages: int, *, gpu: bool, marker_ok: bool,
                    marker_why: str = "", requested: str = "auto") -> Plan:
    """The plan for one PDF, from the facts: marker only where it earns its cost (a CUDA GPU and its models
    reachable, or pages without a text layer), the text-layer converter for the rest."""
    no_text = tuple(sorted(pages_without_text))
    if requested == "marker":
        return Plan("marker", total_pages, reasons=(MARKER_ASKED,))
    if requested == "text":
        return Plan("text", total_pages, missing_pages=no_text,
                    reasons=(TEXT_ASKED,) + (("it does no OCR: pages without a text layer are left out",) if no_text
                                             else ()))
    if gpu and marker_ok:
        return Plan("marker", total_pages, reasons=(ON_A_GPU,))
    machine = ON_THE_CPU if not gpu else f"marker cannot run ({marker_why}), so the text layer"
    if not no_text:
        return Plan("text", total_pages, reasons=(machine,))
    if not marker_ok:
        return Plan("text", total_pages, missing_pages=no_text,
                    reasons=(ON_THE_CPU,) * (not gpu) + (f"marker cannot OCR the pages without a text layer "
                                                          f"({marker_why}): they are left out and named below",))
    if len(no_text) == total_pages:
        return Plan("marker", total_pages, reasons=(OCR,))
    return Plan("text", total_pages, ocr_pages=no_text, reasons=(machine, OCR))


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def plan_line(plans: Sequence[Plan], requested: str) -> str:
    """One line for the folder: which converter reads how many pages, and why."""
    text = sum(p.pages - len(p.ocr_pages) - len(p.missing_pages) for p in plans if p.converter == "text")
    marker_whole = sum(p.pages for p in plans if p.converter == "marker")
    ocr = sum(len(p.ocr_pages) for p in plans)
    missing = sum(len(p.missing_pages) for p in plans)
    parts = [f"the text-layer converter for {_count(text, 'page')}" if text else "",
             f"marker for {_count(marker_whole, 'page')}" if marker_whole else "",
             f"marker's OCR for {_count(ocr, 'page')} without a text layer" if ocr else "",
             f"{_count(missing, 'page')} without a text layer left out" if missing else ""]
    reasons = list(dict.fromkeys(reason for plan in plans for reason in plan.reasons))
    total = sum(p.pages for p in plans)
    return (f"Converter ({requested}) for {_count(total, 'page')} of {_count(len(plans), 'PDF')}: "
            f"{', '.join(part for part in parts if part)}; {'; '.join(reasons)}.")


def machine_facts(requested: str, *, any_without_text: bool) -> tuple[bool, bool, str]:
    """(a CUDA GPU, marker's models reachable, why not) as far as the plan needs them: for --converter text
    nothing is asked, and on the CPU marker's hosts only when some page has no text layer."""
    if requested == "text":
        return False, False, ""
    gpu = requested == "auto" and gpu_available()
    if requested == "auto" and not gpu and not any_without_text:
        return False, False, ""
    ok, why = marker_available()
    if requested == "marker" and not ok:
        raise ConversionError(f"marker cannot run: {why}", "connect to the internet once so marker can "
                              "download its models, or use --converter text")
    return gpu, ok, why


# ---------------------------------------------------------------- the folder


class _Job(NamedTuple):
    pdf: Path
    sha: str
    plan: Plan


def _convert_one_text(path):
    try:
        return convert_text_layer(path), None
    except ConversionError as error:
        return None, (error.reason, error.advice)


def _cache_key(sha, converter):
    return f"{sha}-{converter}{'' if converter == 'marker' else TEXT_CONVERTER_VERSION}"


def _failed(where, pdf, reason, advice):
    return FileResult(where.name(pdf), "failed", reason=reason, advice=advice)


def convert_folder(pdf_dir: PathLike, md_dir: PathLike, converter: str = "auto", *, force: bool = False,
                   workers: int | None = None) -> list[FileResult]:
    """Convert every PDF of `pdf_dir`; returns [FileResult], also written to `<md_dir>/conversion_report.json`."""
    if converter not in CONVERTERS:
        raise SettingsError(f"--converter must be auto, marker or text, not {converter!r}")
    md_dir = Path(md_dir)
    where = _Where(Path(pdf_dir), md_dir)
    cache = md_dir / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    pdfs = list_pdfs(pdf_dir)
    results, pending = {}, []
    for pdf in pdfs:
        try:
            sha = file_sha256(pdf) if pdf.stat().st_size else None
        except OSError as error:  # a link to nowhere, a file we may not read
            results[pdf] = _failed(where, pdf, f"cannot be read ({error.strerror or error})",
                                   "check that the file exists (a link may point nowhere) and is readable")
            continue
        if sha is None:
            results[pdf] = _failed(where, pdf, "empty file (0 bytes)",
                                   "download it again or remove it from the folder")
            continue
        cached = None if force else _cached(cache, sha)
        if cached:
            path, kind = cached
            _publish(where, pdf, path.read_text(encoding="utf-8"))
            results[pdf] = FileResult(where.name(pdf), "cached", markdown=str(where.markdown(pdf)), converter=kind)
        else:
            pending.append((pdf, sha))
    if pending:
        results |= _convert_pending(pending, converter, where=where, workers=workers)
    ordered = marked_duplicates([results[p] for p in pdfs])
    write_atomic(md_dir / REPORT_NAME, json.dumps([asdict(r) for r in ordered], indent=2))
    return ordered


def marked_duplicates(results: list[FileResult]) -> list[FileResult]:
    """Each copy of a paper but one (the same markdown: the same file, or the same text in other bytes) marked
    "duplicate"; the copy with the shortest name is used ("paper.pdf" over "paper (1).pdf"). Trained on twice, a
    paper's sections would also land on both sides of the train/test split, and the check would test what was
    trained."""
    def text_key(r):
        text = " ".join(Path(r.markdown).read_text(encoding="utf-8").split())
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    keys = {i: text_key(r) for i, r in enumerate(results) if r.status in ("converted", "cached")}
    used = {}
    for i in sorted(keys, key=lambda i: (len(results[i].pdf), results[i].pdf)):
        used.setdefault(keys[i], results[i].pdf)
    return [replace(r, status="duplicate", reason=f"the same text as {used[keys[i]]}",
                    advice="it is used once; remove one of the copies to silence this")
            if i in keys and used[keys[i]] != r.pdf else r for i, r in enumerate(results)]


def _cached(cache, sha):
    """(path, converter) of the best cached conversion of this content: marker's, then the text layer's with
    marker's OCR, then the text layer's; None where there is none."""
    for kind in ("marker", "mixed", "text"):
        path = cache / f"{_cache_key(sha, kind)}.md"
        if path.exists():
            return path, kind
    return None


def _publish(where, pdf, markdown):
    target = where.markdown(pdf)
    if not target.exists() or target.read_text(encoding="utf-8") != markdown:
        write_atomic(target, markdown)


def _scan(pending, where):
    """[(pdf, sha, pages without a text layer, pages)] of the readable PDFs, and {pdf: FileResult} of the others."""
    scans, failed = [], {}
    for pdf, sha in tqdm(pending, desc="Reading text layers", unit="pdf", disable=len(pending) < 20):
        try:
            scans.append((pdf, sha, *pages_without_text(pdf)))
        except ConversionError as error:
            failed[pdf] = _failed(where, pdf, error.reason, error.advice)
        except Exception as error:  # pdfium on a damaged file: report, never stop the batch
            failed[pdf] = _failed(where, pdf, f"unreadable PDF ({type(error).__name__}: {error})",
                                  "download it again, or repair it with `qpdf in.pdf out.pdf`")
    return scans, failed


def _convert_pending(pending, requested, *, where, workers):
    """{pdf: FileResult} of the PDFs not in the cache, converted as planned (the plan's line printed first)."""
    scans, results = _scan(pending, where)
    if not scans:
        return results
    gpu, marker_ok, why = machine_facts(requested, any_without_text=any(s[2] for s in scans))
    jobs = [_Job(pdf, sha, plan_conversion(no_text, total, gpu=gpu, marker_ok=marker_ok, marker_why=why,
                                           requested=requested)) for pdf, sha, no_text, total in scans]
    print(plan_line([job.plan for job in jobs], requested))
    waiting = {}  # the text layer's markdown of the PDFs whose pages without one go to marker's OCR
    for job, markdown, failure in _text_results([j for j in jobs if j.plan.converter == "text"], workers):
        if failure or not job.plan.ocr_pages:
            results[job.pdf] = _finish(job, markdown, failure, where=where)
        else:
            waiting[job.pdf] = markdown
    for job, markdown, failure in _marker_results([j for j in jobs if j.plan.converter == "marker"
                                                   or j.pdf in waiting]):
        if job.pdf in waiting:
            results[job.pdf] = _finish_ocr(job, waiting.pop(job.pdf), markdown, failure, where=where)
        else:
            results[job.pdf] = _finish(job, markdown, failure, where=where)
    return results


def _store(job, markdown, kind, *, where, left_out=(), reason="", advice=""):
    """Publish the markdown; cache it only when no page is left out (a later run may fill them in)."""
    if not left_out:
        write_atomic(where.md_dir / ".cache" / f"{_cache_key(job.sha, kind)}.md", markdown)
    _publish(where, job.pdf, markdown)
    return FileResult(where.name(job.pdf), "converted", markdown=str(where.markdown(job.pdf)),
                      reason=reason, advice=advice, converter=kind, pages_left_out=list(left_out))


def _finish(job, markdown, failure, *, where):
    if failure:
        return _failed(where, job.pdf, *failure)
    missing = job.plan.missing_pages
    reason = f"{pages_phrase(missing)} no text layer (scanned?)" if missing else ""
    return _store(job, markdown, job.plan.converter, where=where, left_out=missing, reason=reason,
                  advice=NO_TEXT_ADVICE if missing else "")


def _finish_ocr(job, text_markdown, marker_markdown, failure, *, where):
    """The text layer's markdown with marker's pages put in, or, where marker failed, without them."""
    ocr = job.plan.ocr_pages
    if failure:
        return _store(job, text_markdown, "text", where=where, left_out=ocr,
                      reason=f"{pages_phrase(ocr)} no text layer (scanned?) and {failure[0]}", advice=failure[1])
    ocr_markdown = split_pages(marker_markdown)
    return _store(job, splice_pages(text_markdown, {page: ocr_markdown.get(page, "") for page in ocr}), "mixed",
                  where=where)


def _text_results(jobs: list[_Job], workers: int | None) -> Iterator[tuple[_Job, str | None, tuple | None]]:
    """Yield (job, markdown, failure) as each PDF finishes, with a progress bar in pages."""
    if not jobs:
        return
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    with tqdm(total=sum(job.plan.pages for job in jobs), desc="Converting PDFs (text layer)", unit="page") as bar:
        if workers <= 1 or len(jobs) == 1:
            for job in jobs:
                markdown, failure = _convert_one_text(job.pdf)
                bar.update(job.plan.pages)
                yield job, markdown, failure
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_convert_one_text, job.pdf): job for job in jobs}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    markdown, failure = future.result()
                except Exception as error:  # a crash inside pdfium kills one worker, not the run
                    markdown, failure = None, (f"converter crashed ({type(error).__name__})",
                                               "the PDF is probably damaged: download it again")
                bar.update(job.plan.pages)
                yield job, markdown, failure


def _marker_results(jobs: list[_Job]) -> Iterator[tuple[_Job, str | None, tuple | None]]:
    """Yield (job, markdown, failure) for each PDF, its models loaded once; the whole file, or its pages without
    a text layer; a progress bar in pages (pages/s)."""
    if not jobs:
        return
    print(f"Notice: {marker_models_note()}.")
    try:
        marker = MarkerConverter()
    except ConversionError as error:
        for job in jobs:
            yield job, None, (error.reason, error.advice)
        return
    with tqdm(total=sum(len(job.plan.ocr_pages) or job.plan.pages for job in jobs), desc="Converting pages (marker)",
              unit="page") as bar:
        for job in jobs:
            pages = job.plan.ocr_pages or None
            try:
                markdown, failure = marker(job.pdf, pages=pages), None
            except ConversionError as error:
                markdown, failure = None, (error.reason, error.advice)
            except Exception as error:  # marker may fail on one odd file; the others go on
                markdown, failure = None, (f"marker failed ({type(error).__name__}: {error})",
                                           "try --converter text for this file")
            bar.update(len(pages) if pages else job.plan.pages)
            yield job, markdown, failure


def print_conversion_summary(results: Iterable[FileResult], md_dir: PathLike) -> bool:
    """One line per failed file and per file with pages left out, then the counts; True when any file failed."""
    results = list(results)
    for r in results:
        if r.status == "failed":
            print(f"FAILED {r.pdf}: {r.reason}. What to do: {r.advice}.")
        elif r.status == "duplicate":
            print(f"SKIPPED {r.pdf}: {r.reason}; {r.advice}.")
        elif r.pages_left_out:
            print(f"PAGES LEFT OUT of {r.pdf}: {r.reason}; its other pages are converted. What to do: {r.advice}.")
    counts = {s: sum(r.status == s for r in results) for s in ("converted", "cached", "failed", "duplicate")}
    partly = sum(bool(r.pages_left_out) for r in results)
    extra = (f", {partly} with pages left out" if partly else "") + \
        (f", {counts['duplicate']} duplicate" if counts["duplicate"] else "")
    print(f"PDFs: {len(results)} ({counts['converted']} converted, {counts['cached']} unchanged, "
          f"{counts['failed']} failed{extra}); report: {Path(md_dir) / REPORT_NAME}")
    return bool(counts["failed"])
