"""Federation with Flower: factories train one encoder together; only parameters travel."""
