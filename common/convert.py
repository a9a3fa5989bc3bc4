"""A folder of PDFs -> a folder of markdown: cached by content hash, one bad file never stops the rest.

`<md_dir>/.cache/<sha256>-<converter>.md` holds each conversion, so an unchanged PDF is not converted
again, even after a rename; `<md_dir>/<pdf stem>.md` is the copy a person reads. Each file is
written atomically, so an interrupted run loses only the PDF in flight.
"""
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from .pdf import TEXT_CONVERTER_VERSION, ConversionError, MarkerConverter, convert_text_layer, marker_available

REPORT_NAME = "conversion_report.json"


@dataclass
class FileResult:
    pdf: str
    status: str  # "converted", "cached" or "failed"
    markdown: str = ""
    reason: str = ""
    advice: str = ""


def shown_name(path):
    """The file's name as text (a name that is not valid UTF-8, from an old archive say, with � in place)."""
    return path.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C or a full disk: leave no half-written file behind
        tmp.unlink(missing_ok=True)
        raise


def list_pdfs(pdf_dir):
    """Every file of the folder that claims to be a PDF (by name); non-PDF content is caught later."""
    pdf_dir = Path(pdf_dir)
    if not pdf_dir.is_dir():
        raise FileNotFoundError(f"PDF folder not found: {pdf_dir}. Put your papers there or pass --pdf-dir.")
    return sorted(p for p in pdf_dir.iterdir()
                  if p.suffix.lower() == ".pdf" and (p.is_file() or (p.is_symlink() and not p.exists())))


def has_pdfs(pdf_dir):
    return Path(pdf_dir).is_dir() and bool(list_pdfs(pdf_dir))


def choose_converter(requested):
    """'text' or 'marker' for the requested mode, with a one-line notice when auto falls back."""
    if requested == "text":
        return "text"
    ok, why = marker_available()
    if requested == "marker":
        if not ok:
            raise ConversionError(f"marker cannot run: {why}", "connect to the internet once so marker can "
                                  "download its models, or use --converter text")
        return "marker"
    if requested != "auto":
        raise ValueError(f"--converter must be auto, marker or text, not {requested!r}")
    if not ok:
        print(f"Notice: using the fast text-layer converter, since {why}.")
        return "text"
    return "marker"


def _convert_one_text(path):
    try:
        return convert_text_layer(path), None
    except ConversionError as error:
        return None, (error.reason, error.advice)


def _cache_key(sha, converter):
    return f"{sha}-{converter}{TEXT_CONVERTER_VERSION if converter == 'text' else ''}"


def convert_folder(pdf_dir, md_dir, converter="auto", force=False, workers=None):
    """Convert every PDF of `pdf_dir`; returns [FileResult], also written to `<md_dir>/conversion_report.json`."""
    md_dir = Path(md_dir)
    cache = md_dir / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    pdfs = list_pdfs(pdf_dir)
    results, todo = {}, []
    kind = None
    for pdf in pdfs:
        try:
            sha = file_sha256(pdf) if pdf.stat().st_size else None
        except OSError as error:  # a link to nowhere, a file we may not read
            results[pdf] = FileResult(shown_name(pdf), "failed", reason=f"cannot be read ({error.strerror or error})",
                                      advice="check that the file exists (a link may point nowhere) and is readable")
            continue
        if sha is None:
            results[pdf] = FileResult(shown_name(pdf), "failed", reason="empty file (0 bytes)",
                                      advice="download it again or remove it from the folder")
            continue
        todo.append((pdf, sha))
    pending = []
    for pdf, sha in todo:
        cached = _cached(cache, sha)
        if cached and not force:
            _publish(md_dir, pdf, cached.read_text(encoding="utf-8"))
            results[pdf] = FileResult(shown_name(pdf), "cached", markdown=str(md_dir / f"{pdf.stem}.md"))
        else:
            pending.append((pdf, sha))
    if pending:
        kind = kind or choose_converter(converter)
        for pdf, sha, markdown, failure in _run_converter(kind, pending, workers):
            if failure:
                results[pdf] = FileResult(shown_name(pdf), "failed", reason=failure[0], advice=failure[1])
                continue
            write_atomic(cache / f"{_cache_key(sha, kind)}.md", markdown)
            _publish(md_dir, pdf, markdown)
            results[pdf] = FileResult(shown_name(pdf), "converted", markdown=str(md_dir / f"{pdf.stem}.md"))
    ordered = [results[p] for p in pdfs]
    write_atomic(md_dir / REPORT_NAME, json.dumps([asdict(r) for r in ordered], indent=2))
    return ordered


def _cached(cache, sha):
    """The best cached conversion of this content: marker's if there is one, else the text layer's."""
    for key in (_cache_key(sha, "marker"), _cache_key(sha, "text")):
        if (cache / f"{key}.md").exists():
            return cache / f"{key}.md"
    return None


def _publish(md_dir, pdf, markdown):
    target = md_dir / f"{pdf.stem}.md"
    if not target.exists() or target.read_text(encoding="utf-8") != markdown:
        write_atomic(target, markdown)


def _run_converter(kind, pending, workers):
    """Yield (pdf, sha, markdown, failure) as each PDF finishes, with a progress bar."""
    with tqdm(total=len(pending), desc=f"Converting PDFs ({kind})", unit="pdf") as bar:
        yield from (_marker_results if kind == "marker" else _text_results)(pending, workers, bar)


def _marker_results(pending, workers, bar):
    try:
        marker = MarkerConverter()
    except ConversionError as error:
        for pdf, sha in pending:
            bar.update()
            yield pdf, sha, None, (error.reason, error.advice)
        return
    for pdf, sha in pending:
        try:
            markdown, failure = marker(pdf), None
        except ConversionError as error:
            markdown, failure = None, (error.reason, error.advice)
        except Exception as error:  # marker may fail on one odd file; the others go on
            markdown, failure = None, (f"marker failed ({type(error).__name__}: {error})",
                                       "try --converter text for this file")
        bar.update()
        yield pdf, sha, markdown, failure


def _text_results(pending, workers, bar):
    workers = workers or min(len(pending), os.cpu_count() or 1)
    if workers <= 1 or len(pending) == 1:
        for pdf, sha in pending:
            markdown, failure = _convert_one_text(pdf)
            bar.update()
            yield pdf, sha, markdown, failure
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_convert_one_text, pdf): (pdf, sha) for pdf, sha in pending}
        for future in as_completed(futures):
            pdf, sha = futures[future]
            try:
                markdown, failure = future.result()
            except Exception as error:  # a crash inside pdfium kills one worker, not the run
                markdown, failure = None, (f"converter crashed ({type(error).__name__})",
                                           "the PDF is probably damaged: download it again")
            bar.update()
            yield pdf, sha, markdown, failure


def print_conversion_summary(results, md_dir):
    """One line per failed file, then the counts; returns True when any file failed."""
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        print(f"FAILED {r.pdf}: {r.reason}. What to do: {r.advice}.")
    counts = {s: sum(r.status == s for r in results) for s in ("converted", "cached", "failed")}
    print(f"PDFs: {len(results)} ({counts['converted']} converted, {counts['cached']} unchanged, "
          f"{counts['failed']} failed); report: {Path(md_dir) / REPORT_NAME}")
    return bool(failed)
