"""The `d1` command line: a thin layer over d1isa, compiler and emulator."""
