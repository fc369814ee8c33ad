"""Conditions, one home: the spec of a condition (:mod:`.spec`), parsing, checking and encoding user values
(:mod:`.resolve`), and the normalised condition space with its Gaussian neighbour weights (:mod:`.space`)."""
