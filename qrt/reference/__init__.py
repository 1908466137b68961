"""NumPy references: the executable form of schema/SPEC.md. Each fast kernel in qrt/kernels
must be bit-exact with its reference here."""
