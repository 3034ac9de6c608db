"""The book's Sphinx extension (``_config.yml``: ``sphinx: extra_extensions: [dropnotes.book]``).

* Every notebook page's download button serves the notebook *as executed for this build*, with its outputs:
  at the end of the build, myst-nb's executed copy (``_build/jupyter_execute/<page>.ipynb``) replaces the
  source copy (``_build/html/_sources/<page>.ipynb``) that the button links to.
* Each chapter's stored evidence results are published beside the pages (``_build/html/results/<chapter>/``
  ``laptop.json`` and ``full.json``), for the chapter's download links (:func:`dropnotes.page.run_box`).
* The book's stylesheet (``dropnotes/static/dropnotes.css``): tables that scroll inside their container with
  their key column in view.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from dropnotes.experiments import REGISTRY
from dropnotes.results import REPO_RESULTS

STATIC = Path(__file__).with_name("static")


def _add_static(app, config) -> None:
    config.html_static_path.append(str(STATIC))


def publish(outdir: Path) -> dict[str, list[str]]:
    """Copy the executed notebooks over their source copies and the stored full results into ``outdir`` (the
    HTML output folder); returns what was copied, for the log and the tests."""

    done = {"notebooks": [], "results": []}
    executed = outdir.parent / "jupyter_execute"
    for nb in sorted(executed.rglob("*.ipynb")) if executed.is_dir() else []:
        rel = nb.relative_to(executed)
        target = outdir / "_sources" / rel
        if target.is_file():
            shutil.copyfile(nb, target)
            done["notebooks"].append(str(rel))
    for chapter in REGISTRY:
        for name in ("laptop.json", "full.json"):
            src = REPO_RESULTS / chapter / name
            if src.is_file():
                target = outdir / "results" / chapter / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
                if name == "full.json":
                    done["results"].append(chapter)
                else:
                    done.setdefault("laptop", []).append(chapter)
    return done


def _build_finished(app, exc) -> None:
    if exc is None and app.builder.format == "html":
        done = publish(Path(app.outdir))
        from sphinx.util import logging

        logging.getLogger(__name__).info(f"dropnotes: {len(done['notebooks'])} executed notebooks and "
                                         f"{len(done['results'])} stored full results published")


def setup(app):
    app.connect("config-inited", _add_static)
    app.add_css_file("dropnotes.css")
    app.connect("build-finished", _build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
