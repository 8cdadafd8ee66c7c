"""The LDFI engine: the search loop, minimization, and what a search produces."""

from ldfi.engine.loop import Engine, Observer, SearchOptions, search
from ldfi.engine.records import BUG, CERTIFIED, INCONCLUSIVE, RunRecord, SearchResult

__all__ = ["BUG", "CERTIFIED", "INCONCLUSIVE", "Engine", "Observer", "RunRecord",
           "SearchOptions", "SearchResult", "search"]
