"""The judge contract: judge.proto and its generated Python modules."""
