"""What a reader sees on a chapter's page, beyond the chapter's own prose and figures: formatted tables,
the "run it yourself" box and the provenance box. The chapters' notebooks call these; nothing here
computes or judges a result.

* :func:`show` turns a DataFrame into a table a person reads: no index column, numbers rounded to
  three significant digits of the column's typical size (integers with thousands separators), human
  column names with their units, a caption. In the rendered book it scrolls sideways inside its
  container with its first (key) column kept in view (``dropnotes/static/dropnotes.css``).
* :func:`closing` ends a chapter: a collapsible provenance box for the run shown and for the stored full
  run, and the glued "run it yourself" box that the chapter's opening cell shows (quick-profile time of
  this page's run, predicted and stored full-profile GPU time, the commands, the downloads).

A package of two concerns: :mod:`.tables` (formatting) and :mod:`.evidence` (the stored runs and what the page
says of them). Every name is re-exported here, so ``page.X`` reaches any of them.
"""

from dropnotes.page.tables import (UNITS, WORDS, human, decimals, _formatter, Table, show, FIELDS, _value, _checksums,
                                   provenance_rows, provenance_box)
from dropnotes.page.evidence import (predicted_full_s, _protocol_note, run_box, STORED, STORED_TITLES, _stored_runs,
                                     stored_caption, stored_tables, evidence_summary, finale, VERDICT_ORDER, HIDDEN,
                                     SHOWN_AS, _verdict_first, closing, laptop_here, _repo_record, _repo_full,
                                     scale_series, plot_scales, _draw_scales)


__all__ = ["FIELDS", "HIDDEN", "SHOWN_AS", "STORED", "STORED_TITLES", "Table", "UNITS", "VERDICT_ORDER", "WORDS",
           "_checksums", "_draw_scales", "_formatter", "_protocol_note", "_repo_full", "_repo_record",
           "_stored_runs", "_value", "_verdict_first", "closing", "decimals", "evidence_summary", "finale", "human",
           "laptop_here", "plot_scales", "predicted_full_s", "provenance_box", "provenance_rows", "run_box",
           "scale_series", "show", "stored_caption", "stored_tables"]
