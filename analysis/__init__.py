"""Load what runs store into pandas, and the plots that explain a sweep."""

from analysis.runstore import load_run

__all__ = ["load_run"]
