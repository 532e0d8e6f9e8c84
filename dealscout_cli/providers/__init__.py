"""Model providers: where dealscout's calls meet a model API (see base.Provider)."""
