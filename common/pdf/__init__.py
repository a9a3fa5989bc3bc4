"""PDF -> markdown: one PDF from its text layer (or with marker), or a whole folder with a cache and a report.

files.py: whether a file is a readable PDF, the text-layer converter's entry point, marker.
lines.py: the lines of a PDF's text layer, rebuilt from pdftext's characters.
layout.py: markdown of those lines, in reading order.
folder.py: a folder of PDFs -> a folder of markdown, cached by content hash, with a report; which converter
reads which page (plan_conversion).
"""
from .files import (TEXT_CONVERTER_VERSION, ConversionError, MarkerConverter, check_pdf_file, convert_text_layer,
                    gpu_available, marker_available, open_pdf, pages_without_text)
from .folder import (REPORT_NAME, FileResult, PdfFolderNotFoundError, Plan, convert_folder, has_pdfs, list_pdfs,
                     machine_facts, plan_conversion, plan_line, print_conversion_summary, write_atomic)
from .layout import PAGE_MARK, pages_to_markdown

__all__ = ["PAGE_MARK", "REPORT_NAME", "TEXT_CONVERTER_VERSION", "ConversionError", "FileResult", "MarkerConverter",
           "PdfFolderNotFoundError", "Plan", "check_pdf_file", "convert_folder", "convert_text_layer", "gpu_available",
           "has_pdfs", "list_pdfs", "machine_facts", "marker_available", "open_pdf", "pages_to_markdown",
           "pages_without_text", "plan_conversion", "plan_line", "print_conversion_summary", "write_atomic"]
