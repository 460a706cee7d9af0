"""Pure rules with no I/O: code normalisation, generation templates, phones, times."""
