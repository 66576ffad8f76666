"""mmsearch services: embedder, indexer, searcher, reranker, and the shared kit."""
