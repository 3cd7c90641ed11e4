"""Django-free retrieval engine: ``textproc`` (BM25 tokens), ``index`` (build/load/search a
domain's BM25 + dense index, encoders, rerank), ``fusion`` (weighted RRF and choosing its
weights), ``metrics`` (hit@k, MRR, nDCG, Spearman, evaluating retrievers and encoders)."""
