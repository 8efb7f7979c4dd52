"""mkdocs hook: ``experiments/`` (its README, the measured results and their figures) is part of the site as it
stands in the repository, so the results pages are the files the experiments write, never a copy to keep in step."""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("*.md", "figures/*.png")


def on_files(files, config):
    for pattern in KINDS:
        for path in sorted((ROOT / "experiments").glob(pattern)):
            files.append(File(path.relative_to(ROOT).as_posix(), src_dir=str(ROOT), dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls))
    return files
