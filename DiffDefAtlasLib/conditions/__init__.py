"""Conditions, one home: the spec of a model's condition (:mod:`.spec`), parsing, checking and encoding user values
(:mod:`.resolve`), the normalised condition space with its Gaussian neighbour weights (:mod:`.space`), and the
condition columns of a cohort table with their statistics (:mod:`.columns`)."""
