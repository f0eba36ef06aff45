"""The report's folder: written whole into a staging folder beside it and swapped in, so
a reader never sees half a report, and never put over files bru did not write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bru_core.errors import BruError
from bru_core.report.page import Campaign, render
from bru_core.results import ResultsStore
from bru_core.settings import Settings, get_settings

# A folder bru wrote a report into says so with this file; only such a folder (or an empty
# one, or one from before the marker holding nothing but report.html and PNGs) is ever
# replaced, so `--out ~/thesis` is refused rather than emptied.
REPORT_MARKER = ".bru-report"


def write_report(campaign: str, out: Path, settings: Settings | None = None) -> Path:
    """Write ``report.html`` and its PNGs into ``out`` (atomically replacing an older
    report); returns the HTML path."""
    settings = settings or get_settings()
    out = out.resolve()  # `--out .` names the working directory, whose .name is empty
    report_path_error(out)
    with ResultsStore(settings.results) as store:
        get = lambda what: store.records(what, campaign)  # noqa: E731
        records = Campaign(campaign, store.campaign(campaign), get("tasks"), get("studies"), get("evaluations"),
                           get("summary"), get("comparisons"), get("rankings"), get("curves"))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent))
    try:
        render(records, settings, staging)
        (staging / REPORT_MARKER).write_text(f"bru-lab report of campaign {campaign}; bru replaces this folder whole\n")
        _swap_in(staging, out)
    finally:
        if staging.exists():  # a failure before the swap leaves no half-written folder behind
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return out / "report.html"


def _is_replaceable(folder: Path) -> bool:
    entries = list(folder.iterdir())
    ours = [e for e in entries if e.is_file() and (e.name in ("report.html", REPORT_MARKER) or e.suffix == ".png")]
    return len(ours) == len(entries) and (not entries or any(e.name in ("report.html", REPORT_MARKER) for e in ours))


def _swap_in(staging: Path, out: Path) -> None:
    """Put the staged report at ``out``: a reader never sees half of one."""
    import shutil

    report_path_error(out)  # again: the folder may have changed since the command checked it
    if not out.exists():
        os.replace(staging, out)
        return
    if not any(out.iterdir()):  # an empty folder (perhaps the working directory): fill it, page last
        for item in sorted(staging.iterdir(), key=lambda p: p.name == "report.html"):
            os.replace(item, out / item.name)
        staging.rmdir()
        return
    old = Path(tempfile.mkdtemp(prefix=".report-old-", dir=out.parent))
    os.replace(out, old)  # onto the empty folder just made: a name nobody else holds
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def report_path_error(out: Path) -> None:
    """BruError unless ``out`` may receive a report: absent, empty, or a report bru wrote."""
    if out.exists() and not out.is_dir():
        raise BruError(f"--out: {out} is a file; give a folder for the report")
    if out.is_dir() and not _is_replaceable(out):
        raise BruError(
            f"--out: {out} holds files bru did not write (no {REPORT_MARKER} in it) and would be replaced whole; "
            "give a new or empty folder, or the folder of an earlier report"
        )
