"""Plan and hardware search: exhaustive ground truth and gradient search with rounding."""

from cpo_opt.search.exhaustive import exhaustive_search
from cpo_opt.search.gradient import gradient_search
from cpo_opt.search.space import SearchResult, SearchSpace, make_space

__all__ = ["SearchSpace", "SearchResult", "make_space", "exhaustive_search", "gradient_search"]
