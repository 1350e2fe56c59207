"""Export: lower a trained model to a typed graph (``graph``), quantise it to Loihi fixed point
(``quantize``) and write it as the versioned HDF5 contract (``h5format``)."""
