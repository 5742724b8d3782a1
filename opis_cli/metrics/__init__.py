"""From pair counts to scores (pure numpy, no I/O): utility curves (``utility``,
SPEC 4), OPIS, epsilon-OPIS and retrieval (``consistency``, SPEC 6), the
recommended threshold (``threshold``) and the bootstrap over classes
(``bootstrap``)."""
